"""The run: a small engine that drives rows → requests → bounded workers → recorded outcomes.

``execute`` assembles the parts in an ``AsyncExitStack`` (each closed in reverse order, whatever
happens), then drives them: ``assembly`` builds them from the options; ``intake`` decides what to
send (the rule is ``truth``); ``workers`` send, keeping one key's rows in order; ``recorder`` is the
one writer of outcomes. ``stop()`` ends intake; a run also stops by itself when the answers say
every row left would fail (see ``errors.RunStopped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bulkpatch.engine.assembly import (
    SPARE_FILES,
    Source,
    Transform,
    build_sender,
    ensure_open_files,
    loggable,
    open_input,
    redactor_for,
    target_for,
    transport_for,
)
from bulkpatch.engine.intake import Intake
from bulkpatch.engine.outage import OutageGate
from bulkpatch.engine.pacing import Pacer
from bulkpatch.engine.recorder import Recorder
from bulkpatch.engine.sender import Sender
from bulkpatch.engine.stopping import StopToken
from bulkpatch.engine.summary import result_of
from bulkpatch.engine.workers import Workers
from bulkpatch.errors import BulkPatchError
from bulkpatch.http.redact import Redactor
from bulkpatch.http.transport import Transport
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.ledger_file import OpenLedger, input_identity, open_ledger
from bulkpatch.records.memory import Memory
from bulkpatch.records.results import RunResult, RunStatus
from bulkpatch.records.resume import request_prefix
from bulkpatch.records.stats import Tally
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
        self.options, self._transport, self._events, self._notice = options, transport, events, notice
        self._clock, self._rows, self._transform, self._on_result = clock, rows, transform, on_result
        #: said once when the run should stop; every wait on a row's behalf watches it
        self.stop_token = StopToken(sleep or asyncio.sleep)
        self._fatal: BulkPatchError | None = None
        #: outcomes recorded so far by this run (read by progress displays)
        self.tally = Tally()
        self._workers = Workers(self.stop_token, self._fail, self._emit)
        self._recorder: Recorder | None = None
        self.sender: Sender | None = None
        self.intake: Intake | None = None
        self.source: Source | None = None
        self.pacer: Pacer | None = None
        self.outage: OutageGate | None = None
        self.started = time.monotonic()
        self._auth: Any = None

    def stop(self) -> None:
        """Stop taking rows; in-flight ones finish within the grace period."""
        self.stop_token.stop()

    @property
    def in_flight(self) -> int:
        """Rows being sent right now."""
        return self._workers.in_flight

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
        ending = _Ending()
        async with contextlib.AsyncExitStack() as stack:
            intake, ledger, memory, source = await self._assemble(stack, ending)
            assert self.sender is not None
            writer = ledger.writer
            self.started = time.monotonic()
            cpu_started = time.process_time()
            writer.write_event("run", event="start", pid=os.getpid(), options=loggable(options))
            if memory is not None:
                memory.attach_ledger(options.ledger_path, writer.size, same_input=ledger.bound_to_content)
            more = source.wait if isinstance(source, RowsInput) else _breathe
            await self._workers.drive(
                intake.requests(),
                more,
                self.sender,
                self._recorder.record,  # type: ignore[union-attr]
                concurrency=options.concurrency,
                grace=options.grace,
                handle_signals=handle_signals,
                flush=writer.flush,
            )
            interrupted = self.stop_token.stopped and self._fatal is None
            elapsed = time.monotonic() - self.started
            cpu = time.process_time() - cpu_started
            ending.outcome = "interrupted" if interrupted else "stopped" if self._fatal else "finished"
            writer.write_event(
                "run",
                event="end" if ending.outcome == "finished" else ending.outcome,
                elapsed_s=round(elapsed, 3),
                requests=self.sender.requests,
                **self.tally.as_dict(),
            )
            ending.complete = intake.complete and ending.outcome == "finished"
        requests = self.sender.requests
        result = result_of(
            options,
            self.tally,
            requests,
            intake,
            ledger,
            memory,
            elapsed=elapsed,
            cpu=cpu,
            interrupted=interrupted,
        )
        if self._fatal is not None:
            # What the run did before it stopped goes with the error, for the summary.
            self._fatal.result = result
            raise self._fatal
        return result

    async def _assemble(
        self, stack: contextlib.AsyncExitStack, ending: _Ending
    ) -> tuple[Intake, OpenLedger, Memory | None, Source]:
        """Open the parts, each closed by ``stack`` in reverse order: input, memory (first: a busy
        memory must refuse before the ledger moves), ledger, transport, sender, intake."""
        options = self.options
        in_code = self._rows is not None
        binding = {
            "input": {"path": "<rows>"} if in_code else input_identity(options.input),
            "path_template": options.path,
            "method": options.method,
        }
        own = None if self._transport is not None else transport_for(options)
        source, mapper, records = open_input(options, self._rows, self._transform)
        stack.callback(source.close)
        self.source = source
        binding["format"] = source.format.value
        memory = None
        if options.memory_path is not None:
            memory = Memory(
                options.memory_path, target_for(options), input_name=options.input, full=options.full
            )
            stack.callback(lambda: memory.close(ending.outcome, self._counts(), complete=ending.complete))
            if (other := options.other_memory) is not None:
                self._say(
                    f"{other} beside the ledger is another memory: runs recorded there are not seen here"
                )
            memory.on_error = self._fail
        name = None if in_code else options.input
        ledger = open_ledger(options.ledger_path, binding, input_name=name, keep=options.keep_ledgers)
        stack.callback(ledger.close)
        if ledger.archived is not None:
            self._say(f"the input changed since the ledger's last run: kept that ledger as {ledger.archived}")
        if ledger.writer.error is not None:
            raise ledger.writer.error
        ledger.writer.on_error = self._fail
        self._recorder = Recorder(ledger.writer, ledger.index, self.tally, memory, self._on_result)
        transport: Transport = self._transport or own  # type: ignore[assignment]
        if own is not None:
            await stack.enter_async_context(own)
        await self._sender(transport, redactor_for(options))
        unchanged = await self._plan(transport) if options.only_changed else None
        self.intake = Intake(
            records,
            mapper,
            self._recorder.record,
            ledger.index,
            prefix=request_prefix(options.method, options.base_url or ""),
            memory=memory,
            retry_failed=options.retry_failed,
            heal=options.state is not None,
            full=options.full,
            limit=options.limit,
            stopping=lambda: self.stop_token.stopped,
            on_error=self._fail,
            shard=options.shard,
            unchanged=unchanged,
        )
        return self.intake, ledger, memory, source

    def _counts(self) -> dict[str, int]:
        """The run's line in the memory: outcomes, rows read, rows sent, requests."""
        counts = {s.value: n for s, n in self.tally.by_status.items()}
        counts["sent"] = self.tally.by_status[Status.OK] + self.tally.by_status[Status.FAILED]
        counts["rows"] = self.intake.rows_read if self.intake is not None else 0
        counts["requests"] = self.sender.requests if self.sender is not None else 0
        return counts

    async def _plan(self, transport: Transport) -> Callable[[int], bool]:
        """``--only-changed``: read the live workloads first; rows already equal are not sent."""
        from bulkpatch.engine.preview import live_unchanged

        given = self._transport  # a caller's transport reads too; ours keeps 64 KiB of an answer
        return await live_unchanged(self.options, given, auth=self._auth, notice=self._say)

    async def _sender(self, transport: Transport, redact: Redactor) -> Sender:
        """The sender and what it passes through: auth (checked now), pacer, outage gate."""
        parts = await build_sender(
            self.options,
            transport,
            redact,
            stop=self.stop_token,
            clock=self._clock,
            emit=self._emit,
            given_transport=self._transport is not None,
        )
        self._auth, self.pacer, self.outage, self.sender = parts
        return self.sender

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


async def _breathe() -> None:
    await asyncio.sleep(0)


@dataclass
class _Ending:
    """How the run ended, for the parts closed after it (the memory's run line)."""

    outcome: str | None = None
    complete: bool = False
