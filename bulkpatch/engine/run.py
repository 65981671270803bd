"""The run: a small engine that drives rows → requests → bounded workers → recorded outcomes.

The parts have modules of their own: ``wiring`` builds the input, transport and auth from the
options; ``intake`` turns input records into the requests worth sending (resume, sync state,
``--limit``); ``sender`` sends one row's request with retries, through the pacer and the outage
gate; ``recorder`` writes each outcome to the ledger, the index, the tally and the sync state.
This module starts ``concurrency`` workers that pull from the intake (no task per row, nothing
materialized), keeps rows of one key in input order, and stops.

Stopping: ``stop()`` (the first SIGINT/SIGTERM/SIGHUP) ends intake; workers finish their current
request within ``grace`` seconds, then are cancelled; a row that did not finish is left
unrecorded, so the next run sends it again. A second signal cancels at once. A run also stops by
itself when the answers say every row left would fail (see ``errors.RunStopped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator
from typing import Any

from bulkpatch.engine.assembly import (
    SPARE_FILES,
    Source,
    Transform,
    auth_for,
    base_headers,
    ensure_open_files,
    loggable,
    open_input,
    redactor_for,
    transport_for,
)
from bulkpatch.engine.intake import Intake
from bulkpatch.engine.key_order import KeyOrder
from bulkpatch.engine.outage import FirstRowsGuard, OutageGate
from bulkpatch.engine.pacing import Pacer
from bulkpatch.engine.recorder import Recorder
from bulkpatch.engine.retry import RetryPolicy
from bulkpatch.engine.sender import Attempt, Sender
from bulkpatch.engine.stopping import StopToken
from bulkpatch.errors import BulkPatchError
from bulkpatch.http.transport import Transport
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.results import RunResult, RunStatus
from bulkpatch.records.resume import OpenLedger, input_identity, open_ledger, request_prefix
from bulkpatch.records.stats import Tally
from bulkpatch.records.sync_state import SyncState, target_of
from bulkpatch.rows.mapping import Request
from bulkpatch.rows.reader import RowsInput

#: callback for attempt-level events: (event name, fields); fields never hold secrets
EventSink = Callable[[str, dict[str, Any]], None]


class Run:
    """One ``bulkpatch run``: create it, then ``await execute()``; ``stop()`` to end it early.

    ``rows`` replaces the input file with mappings (an iterable or async iterable), ``transform``
    rewrites each row's fields before mapping, ``on_result`` sees every recorded outcome.
    """

    def __init__(
        self,
        options: RunOptions,
        *,
        transport: Transport | None = None,
        events: EventSink | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        notice: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rows: Iterable[Any] | AsyncIterable[Any] | None = None,
        transform: Transform | None = None,
        on_result: Callable[[RowResult], None] | None = None,
    ) -> None:
        self.options = options
        self._transport = transport
        self._events = events
        self._notice = notice
        self._clock = clock
        self._rows = rows
        self._transform = transform
        self._on_result = on_result
        #: said once when the run should stop; every wait on a row's behalf watches it
        self.stop_token = StopToken(sleep or asyncio.sleep)
        self._fatal: BulkPatchError | None = None
        #: outcomes recorded so far by this run (read by progress displays)
        self.tally = Tally()
        #: rows being sent right now
        self.in_flight = 0
        self.sender: Sender | None = None
        self.intake: Intake | None = None
        self.source: Source | None = None
        self.pacer: Pacer | None = None
        self.outage: OutageGate | None = None
        self.started = time.monotonic()
        self._order = KeyOrder()
        self._auth: Any = None
        self._guard = FirstRowsGuard()

    def stop(self) -> None:
        """Stop taking rows; in-flight ones finish within the grace period."""
        self.stop_token.stop()

    @property
    def retrying(self) -> int:
        """Rows between a failed attempt and their final answer right now."""
        return self.sender.retrying if self.sender is not None else 0

    def status(self) -> RunStatus:
        """A copy of the run's counters as they stand, for progress displays."""
        intake, pacer, source, outage = self.intake, self.pacer, self.source, self.outage
        return RunStatus(
            input=self.options.input,
            format=source.format.value if source is not None else None,
            ready=intake is not None,
            started=self.started,
            counts=dict(self.tally.by_status),
            already_done=intake.already_done if intake is not None else 0,
            rows_read=intake.rows_read if intake is not None else 0,
            bytes_read=source.bytes_read if source is not None else 0,
            retrying=self.retrying,
            in_flight=self.in_flight,
            paused_for=pacer.paused_for if pacer is not None else 0.0,
            outage_for=outage.down_for if outage is not None else 0.0,
            concurrency=pacer.limit if pacer is not None else None,
            max_concurrency=pacer.max_limit if pacer is not None else None,
            rate=pacer.rate if pacer is not None else None,
            quota=pacer.quota.describe() if pacer is not None else None,
            stopping=self.stop_token.stopped,
        )

    async def execute(self, *, handle_signals: bool = False) -> RunResult:
        """Run to the end of the input (or until stopped) and return what happened."""
        options = self.options
        if options.dry_run:
            raise BulkPatchError("a dry run sends nothing: call bulkpatch.dry_run(options) instead of Run")
        ensure_open_files(options.concurrency + SPARE_FILES)
        redact = redactor_for(options)
        in_code = self._rows is not None
        binding = {
            "input": {"path": "<rows>"} if in_code else input_identity(options.input),
            "path_template": options.path,
            "method": options.method,
        }
        source, mapper, records = open_input(options, self._rows, self._transform)
        self.source = source
        own = None if self._transport is not None else transport_for(options)
        transport: Transport = self._transport or own  # type: ignore[assignment]
        ledger: OpenLedger | None = None
        state: SyncState | None = None
        try:
            binding["format"] = source.format.value
            if options.state_path is not None:  # first: a busy state must refuse before the ledger moves
                target = target_of(options.base_url or "", options.method, options.path)
                state = SyncState(options.state_path, target, input_name=options.input, full=options.full)
            ledger = open_ledger(options.ledger_path, binding, input_name=None if in_code else options.input)
            if ledger.archived is not None:
                self._say(
                    f"the input changed since the ledger's last run: kept that ledger as {ledger.archived};"
                    f" rows it applied with the same request are not sent again"
                )
            writer = ledger.writer
            if writer.error is not None:
                raise writer.error
            writer.on_error = self._fail
            recorder = Recorder(writer, ledger.index, self.tally, state, self._on_result)
            async with contextlib.AsyncExitStack() as stack:
                if own is not None:
                    await stack.enter_async_context(own)
                sender = await self._sender(transport, redact)
                unchanged = await self._plan(transport) if options.only_changed else None
                self.intake = intake = Intake(
                    records,
                    mapper,
                    recorder,
                    prefix=request_prefix(options.method, options.base_url or ""),
                    retry_failed=options.retry_failed,
                    limit=options.limit,
                    state=state,
                    stopping=lambda: self.stop_token.stopped,
                    on_error=self._fail,
                    shard=options.shard,
                    carried=ledger.carried,
                    unchanged=unchanged,
                )
                self.started = time.monotonic()
                cpu_started = time.process_time()
                writer.write_event("run", event="start", pid=os.getpid(), options=loggable(options))
                interrupted = await self._drive(intake, sender, recorder, source, handle_signals)
                elapsed = time.monotonic() - self.started
                cpu = time.process_time() - cpu_started
            outcome = "interrupted" if interrupted else "stopped" if self._fatal else "finished"
            writer.write_event(
                "run",
                event="end" if outcome == "finished" else outcome,
                elapsed_s=round(elapsed, 3),
                requests=sender.requests,
                **self.tally.as_dict(),
            )
            if state is not None:
                counts = {s.value: n for s, n in self.tally.by_status.items()}
                sent = self.tally.by_status[Status.OK] + self.tally.by_status[Status.FAILED]
                state.close(
                    outcome, {**counts, "rows": intake.rows_read, "sent": sent, "requests": sender.requests}
                )
        finally:
            source.close()
            if state is not None:
                state.close()
            if ledger is not None:
                ledger.close()
        result = RunResult(
            tally=self.tally,
            state=ledger.index.counts(),
            already_done=intake.already_done,
            elapsed=elapsed,
            interrupted=interrupted,
            ledger_path=options.ledger_path,
            rows_read=intake.rows_read,
            input=options.input,
            limited=intake.limited,
            cpu_s=cpu,
            processes=options.processes,
            requests=sender.requests,
            changed=intake.changed,
            repeated_keys=intake.repeated_keys,
            archived_ledger=ledger.archived,
            state_path=options.state_path,
            transient_failed=ledger.index.transient_failures(),
            other_shards=intake.other_shards,
            shard=options.shard,
            rate=options.shard_rate,
        )
        if self._fatal is not None:
            # What the run did before it stopped goes with the error, for the summary.
            self._fatal.result = result
            raise self._fatal
        return result

    async def _plan(self, transport: Transport) -> Callable[[int], bool]:
        """``--only-changed``: read the live workloads first; rows already equal are not sent."""
        from bulkpatch.ops.plan import plan_rows

        planned = await plan_rows(self.options, transport, auth=self._auth, notice=self._say)
        self._say(
            f"planned against the live workloads: {planned.to_change:,} rows to change,"
            f" {planned.unchanged:,} already equal, {planned.not_found:,} not found"
        )
        return lambda row: not planned.should_send(row)

    async def _sender(self, transport: Transport, redact: Any) -> Sender:
        """The sender and what it passes through: auth (checked now), pacer, outage gate."""
        options = self.options
        auth = auth_for(
            options,
            transport,
            redact,
            on_renew=lambda lifetime: self._emit("token_renewed", {"lifetime_s": round(lifetime, 1)}),
        )
        await auth.header()  # a bad secret stops the run here, before any row is sent
        self._auth = auth
        self.pacer = Pacer(
            options.concurrency,
            rate=options.shard_rate,
            stop=self.stop_token,
            on_change=self._pace_changed,
        )
        self.outage = OutageGate(
            max_outage=options.max_outage,
            clock=self._clock,
            sleep=self.stop_token.sleep,
            on_change=self._emit,
        )
        self.sender = Sender(
            transport,
            options.base_url or "",
            method=options.method,
            policy=RetryPolicy(max_attempts=options.max_attempts),
            auth=auth,
            pacer=self.pacer,
            stop=self.stop_token,
            on_retry=self._retry_scheduled,
            outage=self.outage,
            redact=redact,
            retry_unsafe=options.retry_unsafe,
            # A transport of the caller's (a MockTransport, say) has none of the run's headers.
            headers=base_headers(options) if self._transport is not None else None,
        )
        return self.sender

    async def _drive(
        self, intake: Intake, sender: Sender, recorder: Recorder, source: Source, handle_signals: bool
    ) -> bool:
        loop = asyncio.get_running_loop()
        work = intake.requests()
        more = source.wait if isinstance(source, RowsInput) else _breathe
        workers = [
            asyncio.create_task(self._worker(work, more, sender, recorder))
            for _ in range(self.options.concurrency)
        ]
        all_done = asyncio.gather(*workers)
        signals_seen = 0

        def on_signal() -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                self._emit("stop_requested", {"in_flight": self.in_flight})
                self.stop()
            else:
                all_done.cancel()

        installed = []
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                # Not in the main thread (or not on Unix): no signal handling, and that is fine.
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, on_signal)
                    installed.append(sig)
        try:
            stop_wait = asyncio.ensure_future(self.stop_token.wait())
            either: list[asyncio.Future[Any]] = [all_done, stop_wait]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if not all_done.done():
                # Stopping: give in-flight requests a bounded grace period, then cancel them.
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(all_done), self.options.grace)
                all_done.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await all_done
            elif all_done.exception() is not None:
                # A worker failed unexpectedly: the others must not outlive the run.
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                all_done.result()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
        return self.stop_token.stopped and self._fatal is None

    async def _worker(
        self,
        work: Iterator[Request | None],
        more: Callable[[], Awaitable[None]],
        sender: Sender,
        recorder: Recorder,
    ) -> None:
        send = sender.send
        record = recorder.record
        order = self._order
        guard = self._guard
        for request in work:
            if request is None:
                await more()  # the intake passed over many rows, or waits for rows given in code
                continue
            key = request.key  # "" when the path names no field: nothing to keep in order
            turn, before = order.take(key) if key else (None, None)
            self.in_flight += 1
            try:
                if before is not None:
                    await before.wait()
                    if self.stop_token.stopped:
                        return  # the earlier row of this key has no answer: this one must wait too
                result = await send(request)
            except BulkPatchError as exc:
                self._fail(exc)
                return
            finally:
                self.in_flight -= 1
                if turn is not None:
                    order.done(key, turn)
            if result is None:
                return  # the run stopped before this row had an answer: it stays unrecorded
            record(result)
            if guard.watching and (wrong := guard.see(result)) is not None:
                self._fail(wrong)

    def _say(self, line: str) -> None:
        if self._notice is not None:
            self._notice(line)

    def _fail(self, error: BulkPatchError) -> None:
        """Stop the run because of ``error``; ``execute`` raises it once in-flight rows are done."""
        self._fatal = error
        self.stop()

    def _emit(self, event: str, fields: dict[str, Any]) -> None:
        if self._events is not None:
            self._events(event, fields)

    def _retry_scheduled(self, request: Request, attempt: Attempt, delay: float) -> None:
        self._emit(
            "retry_scheduled",
            {
                "row": request.row,
                "key": request.key,
                "http_status": attempt.status,
                "error": attempt.error,
                "delay_s": round(delay, 3),
                "retry_after": attempt.retry_after,
            },
        )

    def _pace_changed(self, what: str, value: int, why: str) -> None:
        self._emit(f"{what}_changed", {"value": value, "reason": why})


async def _breathe() -> None:
    await asyncio.sleep(0)
