"""The run: input records → requests → bounded workers → ledger.

``N`` workers pull from one shared generator that reads, maps and filters the input lazily: the
input is never materialized and no task is created per row. Rows that cannot be sent are recorded
by the generator itself; sent rows are recorded by the worker that sent them.

A row whose request the ledger already answered (same row, same request fingerprint) is not sent
again; a row of a key that is still in flight waits for it, so one key's rows land in input order.

Stopping: ``stop()`` (the first SIGINT/SIGTERM/SIGHUP) ends intake; workers finish their current
request within ``grace`` seconds, then are cancelled; a row that did not finish is left
unrecorded, so the next run sends it again. A second signal cancels at once. A run also stops by
itself when the answers say every row left would fail (see ``errors.RunStopped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bulkpatch.auth import Auth, BearerToken, ClientCredentials, NoAuth, token_url_for
from bulkpatch.errors import BulkPatchError, ConfigError, InputError, WrongTarget
from bulkpatch.key_order import KeyOrder, SeenKeys
from bulkpatch.ledger import LedgerWriter, RowResult, Status
from bulkpatch.mapping import Mapper, PathTemplate, Rejected, Request
from bulkpatch.options import RunOptions
from bulkpatch.outage import OutageGate
from bulkpatch.pacing import Pacer
from bulkpatch.reader import Format, InputFile, Record
from bulkpatch.redact import Redactor
from bulkpatch.resume import (
    LedgerIndex,
    fingerprint,
    input_identity,
    open_ledger,
    rejection_fingerprint,
    request_prefix,
)
from bulkpatch.retry import RetryPolicy
from bulkpatch.sender import Attempt, Sender
from bulkpatch.stats import Tally
from bulkpatch.transport import AiohttpTransport, Transport
from bulkpatch.worker_processes import ProcessTransport

#: open files beyond one per connection: input, ledger, log, stdio, the token endpoint
_SPARE_FILES = 32
#: callback for attempt-level events: (event name, fields); fields never hold secrets
EventSink = Callable[[str, dict[str, Any]], None]
#: the first rows sent: when all of them fail with one status, the target is probably wrong
WRONG_TARGET_ROWS = 50


class _Interrupted(Exception):
    """A wait was cut short by stop(); the row stays unrecorded."""


@dataclass
class RunResult:
    """What a run did, and the state of the whole ledger after it."""

    #: outcomes recorded by this run
    tally: Tally
    #: latest status of every row in the ledger, this run and earlier ones
    state: dict[Status, int]
    #: rows not sent because the ledger already had them
    already_done: int
    elapsed: float
    interrupted: bool
    ledger_path: str
    #: the input file's name as given
    input: str = "-"
    #: True when ``--limit`` stopped the run before the end of the input
    limited: bool = False
    #: rows read from the input by this run (sent, recorded or skipped)
    rows_read: int = 0
    #: CPU seconds this process used while sending (worker processes not included)
    cpu_s: float = 0.0
    #: the --processes the run used
    processes: int = 1
    #: HTTP requests this run sent (token renewals' resends included)
    requests: int = 0
    #: rows whose slot in the ledger held another request (the input changed since)
    changed: int = 0
    #: keys that appeared on more than one row of the input read by this run
    repeated_keys: int = 0
    #: where the ledger of an earlier run was kept because the input had changed since
    archived_ledger: str | None = None

    @property
    def exit_code(self) -> int:
        """0 all ok or skipped, 1 some failed or invalid, 130 interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.state[Status.FAILED] or self.state[Status.INVALID] else 0


@dataclass
class DryRunResult:
    """What a dry run found: counts, and the first few requests it would send."""

    tally: Tally
    samples: list[tuple[str, str, bytes | None]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class Run:
    """One ``bulkpatch run``: create it, then ``await execute()``; ``stop()`` to end it early."""

    def __init__(
        self,
        options: RunOptions,
        *,
        transport: Transport | None = None,
        events: EventSink | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        notice: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self._transport = transport
        self._events = events
        self._notice = notice
        self._clock = clock
        self._sleep_impl = sleep or asyncio.sleep
        self._stop_event: asyncio.Event | None = None
        self._stopping = False
        self._fatal: BulkPatchError | None = None
        #: outcomes recorded so far by this run (read by progress displays)
        self.tally = Tally()
        #: rows being sent right now
        self.in_flight = 0
        self.sender: Sender | None = None
        self.already_done = 0
        #: rows whose recorded request differs from the one they map to now
        self.changed = 0
        self.rows_read = 0
        #: True when --limit ended intake before the end of the input
        self.limited = False
        self.source: InputFile | None = None
        self.pacer: Pacer | None = None
        self.outage: OutageGate | None = None
        self.started = time.monotonic()
        self._order = KeyOrder()
        self._seen = SeenKeys()
        #: (count, status, error) of the first rows sent while all of them failed alike
        self._first_failures: tuple[int, int | None, str] | None = (0, None, "")

    def stop(self) -> None:
        """Stop taking rows; in-flight ones finish within the grace period."""
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    @property
    def retrying(self) -> int:
        """Rows between a failed attempt and their final answer right now."""
        return self.sender.retrying if self.sender is not None else 0

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def execute(self, *, handle_signals: bool = False) -> RunResult:
        """Run to the end of the input (or until stopped) and return what happened."""
        options = self.options
        self._stop_event = asyncio.Event()
        if self._stopping:
            self._stop_event.set()
        _ensure_open_files(options.concurrency + _SPARE_FILES)
        redact = Redactor([options.token, options.client_secret, *options.headers.values()])
        binding = {
            "input": input_identity(options.input),
            "path_template": options.path,
            "method": options.method.upper(),
        }
        source, mapper, records = _open_input(options)
        self.source = source
        own_transport = self._transport is None
        transport = self._transport or _transport_for(options)
        ledger = None
        try:
            binding["format"] = source.format.value
            ledger = open_ledger(options.ledger_path, binding, input_name=options.input)
            writer, index = ledger.writer, ledger.index
            if ledger.archived is not None:
                self._say(
                    f"the input changed since the ledger's last run: kept that ledger as {ledger.archived},"
                    f" starting a new one at {options.ledger_path}"
                )
            if writer.error is not None:
                raise writer.error
            writer.on_error = self._fail
            if isinstance(transport, ProcessTransport):
                await transport.start()
            auth = self._auth(transport, redact)
            await auth.header()  # a bad secret stops the run here, before any row is sent
            self.pacer = Pacer(
                options.concurrency,
                rate=options.rate,
                sleep=self._sleep,
                on_change=self._pace_changed,
            )
            self.outage = OutageGate(
                max_outage=options.max_outage, clock=self._clock, sleep=self._sleep, on_change=self._emit
            )
            self.sender = sender = Sender(
                transport,
                options.base_url or "",
                method=options.method,
                policy=RetryPolicy(max_attempts=options.max_attempts),
                auth=auth,
                pacer=self.pacer,
                sleep=self._sleep,
                on_retry=self._retry_scheduled,
                outage=self.outage,
                redact=redact,
                retry_unsafe=options.retry_unsafe,
            )
            self.started = time.monotonic()
            cpu_started = time.process_time()
            writer.write_event("run", event="start", pid=os.getpid(), options=_loggable(options))
            prefix = request_prefix(options.method, options.base_url or "")
            interrupted = await self._drive(
                self._work(records, mapper, writer, index, prefix), sender, writer, index, handle_signals
            )
            elapsed = time.monotonic() - self.started
            cpu = time.process_time() - cpu_started
            writer.write_event(
                "run",
                event="interrupted" if interrupted else "stopped" if self._fatal else "end",
                elapsed_s=round(elapsed, 3),
                requests=sender.requests,
                **self.tally.as_dict(),
            )
        finally:
            source.close()
            if ledger is not None:
                ledger.close()
            if own_transport:
                await transport.close()
        result = RunResult(
            tally=self.tally,
            state=index.counts(),
            already_done=self.already_done,
            elapsed=elapsed,
            interrupted=interrupted,
            ledger_path=options.ledger_path,
            rows_read=self.rows_read,
            input=options.input,
            limited=self.limited,
            cpu_s=cpu,
            processes=options.processes,
            requests=sender.requests,
            changed=self.changed,
            repeated_keys=self._seen.repeated,
            archived_ledger=ledger.archived,
        )
        if self._fatal is not None:
            # What the run did before it stopped goes with the error, for the summary.
            self._fatal.result = result
            raise self._fatal
        return result

    async def _drive(
        self,
        work: Iterator[Request],
        sender: Sender,
        writer: LedgerWriter,
        index: LedgerIndex,
        handle_signals: bool,
    ) -> bool:
        loop = asyncio.get_running_loop()
        workers = [
            asyncio.create_task(self._worker(work, sender, writer, index))
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
            assert self._stop_event is not None
            stop_wait = asyncio.ensure_future(self._stop_event.wait())
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
        return self._stopping and self._fatal is None

    def _work(
        self,
        records: Iterator[Record],
        mapper: Mapper,
        writer: LedgerWriter,
        index: LedgerIndex,
        prefix: bytes,
    ) -> Iterator[Request]:
        """Yield the requests to send; record rows that will not be sent."""
        done = index.done_mask(self.options.retry_failed)
        codes, fps = index.codes, index.fps
        known = len(done)
        tally_add = self.tally.add
        seen_add = self._seen.add
        budget = self.options.limit
        try:
            for record in records:
                if self._stopping:
                    return
                mapped = mapper.map(record)
                row = record.row
                if type(mapped) is Request:
                    fp = mapped.fp = fingerprint(prefix, mapped.path, mapped.body)
                    seen_add(mapped.key)
                else:
                    assert isinstance(mapped, Rejected)
                    fp = rejection_fingerprint(mapped.status, mapped.key, mapped.reason)
                if row < known and codes[row]:
                    if fps[row] == fp:
                        if done[row]:
                            self.rows_read += 1
                            self.already_done += 1
                            continue
                    else:
                        self.changed += 1
                if budget is not None:
                    if budget == 0:
                        self.limited = True
                        return
                    budget -= 1
                self.rows_read += 1
                if type(mapped) is Request:
                    yield mapped
                else:
                    assert isinstance(mapped, Rejected)
                    result = _unsent(mapped, fp)
                    writer.write(result)
                    index.set(result)
                    tally_add(result)
        except InputError as exc:
            # The file broke off (truncated gzip): finish the rows in flight, then report it.
            self._fail(exc)

    async def _worker(
        self, work: Iterator[Request], sender: Sender, writer: LedgerWriter, index: LedgerIndex
    ) -> None:
        send = sender.send
        write = writer.write
        tally_add = self.tally.add
        order = self._order
        for request in work:
            turn, before = order.take(request.key)
            self.in_flight += 1
            try:
                if before is not None:
                    await before.wait()
                result = await send(request)
            except _Interrupted:
                return
            except BulkPatchError as exc:
                self._fail(exc)
                return
            finally:
                self.in_flight -= 1
                order.done(request.key, turn)
            write(result)
            index.set(result)
            tally_add(result)
            if self._first_failures is not None:
                self._watch_first(result)

    def _watch_first(self, result: RowResult) -> None:
        """Stop when the first rows sent all failed with one HTTP status: a wrong URL, most likely."""
        assert self._first_failures is not None
        count, status, error = self._first_failures
        if (
            result.status is not Status.FAILED
            or result.http_status is None
            or (count and status != result.http_status)
        ):
            self._first_failures = None
            return
        count += 1
        self._first_failures = (count, result.http_status, error or result.error or "")
        if count >= WRONG_TARGET_ROWS:
            self._first_failures = None
            self._fail(
                WrongTarget(
                    f"the first {count} rows sent all failed with HTTP {status} ({error}); "
                    "check --base-url and --path"
                )
            )

    async def _sleep(self, seconds: float) -> None:
        """Sleep, unless the run is stopping: then raise so the row stays unrecorded."""
        event = self._stop_event
        if event is None:
            await self._sleep_impl(seconds)
            return
        if event.is_set():
            raise _Interrupted
        if self._sleep_impl is not asyncio.sleep:
            await self._sleep_impl(seconds)
            if event.is_set():
                raise _Interrupted
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
            raise _Interrupted

    def _auth(self, transport: Transport, redact: Redactor) -> Auth:
        options = self.options
        if options.token:
            return BearerToken(options.token)
        if options.client_id and options.client_secret:
            url = options.token_url or token_url_for(options.base_url or "")
            return ClientCredentials(
                transport,
                url,
                options.client_id,
                options.client_secret,
                on_renew=lambda lifetime: self._emit("token_renewed", {"lifetime_s": round(lifetime, 1)}),
                on_token=redact.add,
            )
        return NoAuth()

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


def dry_run(options: RunOptions, *, samples: int = 5) -> DryRunResult:
    """Read, map and validate every row; send nothing, write no ledger."""
    source, mapper, records = _open_input(options)
    result = DryRunResult(Tally())
    base = (options.base_url or "").rstrip("/")
    with source:
        for record in records:
            mapped = mapper.map(record)
            if isinstance(mapped, Request):
                result.tally.by_status[Status.OK] += 1
                if len(result.samples) < samples:
                    result.samples.append((options.method.upper(), base + mapped.path, mapped.body))
            else:
                result.tally.add(_unsent(mapped))
                if len(result.rejected) < samples:
                    result.rejected.append(mapped)
    return result


def _unsent(rejected: Rejected, fp: int = 0) -> RowResult:
    """The ledger record of a row that was not sent."""
    status = Status(rejected.status)
    return RowResult(rejected.row, rejected.line, rejected.key, status, None, 0, rejected.reason, None, fp)


def _open_input(options: RunOptions) -> tuple[InputFile, Mapper, Iterator[Record]]:
    template = PathTemplate(options.path)
    source = InputFile(options.input, options.format)
    try:
        records: Iterator[Record] = iter(source)
        if source.format is Format.CSV:
            mapper = Mapper(
                template,
                schema=options.schema,
                method=options.method,
                fmt=source.format,
                header=source.header,
            )
        else:
            mapper = Mapper(template, schema=options.schema, method=options.method, fmt=source.format)
            # A template naming a field that the first readable record lacks would fail every
            # row: refuse it up front instead.
            first = []
            for record in records:
                first.append(record)
                if record.fields is not None:
                    mapper.check_fields(record.fields)
                    break
            records = itertools.chain(first, records)
    except BaseException:
        source.close()
        raise
    return source, mapper, records


def _ensure_open_files(needed: int) -> None:
    """Raise the soft limit on open files to ``needed`` if it is lower, or refuse the run."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            f"--concurrency needs about {needed} open files, but the limit is {hard} (ulimit -n);"
            " lower --concurrency or raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _transport_for(options: RunOptions) -> Transport:
    headers = _base_headers(options)
    if options.processes > 1:
        return ProcessTransport(
            processes=options.processes,
            limit=options.concurrency,
            timeout=options.timeout,
            headers=headers,
        )
    return AiohttpTransport(limit=options.concurrency + 2, timeout=options.timeout, headers=headers)


def _base_headers(options: RunOptions) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "bulkpatch"}
    if options.method.upper() not in ("GET", "DELETE"):
        headers["Content-Type"] = "application/json"
    headers.update(options.headers)
    return headers


def _loggable(options: RunOptions) -> dict[str, Any]:
    """The options worth recording in the ledger: no secrets, no header values."""
    return {
        "method": options.method.upper(),
        "base_url": options.base_url,
        "concurrency": options.concurrency,
        "processes": options.processes,
        "rate": options.rate,
        "max_attempts": options.max_attempts,
        "timeout": options.timeout,
        "retry_failed": options.retry_failed.value,
        "retry_unsafe": options.retry_unsafe,
        "max_outage": options.max_outage,
        "limit": options.limit,
        "headers": sorted(options.headers),
        "auth": "token" if options.token else "client_credentials" if options.client_id else None,
    }
