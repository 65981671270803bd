"""The run: input records → requests → bounded workers → ledger.

``N`` workers pull from one shared generator that reads, maps and filters the input lazily: the
input is never materialized and no task is created per row. Rows that cannot be sent are recorded
by the generator itself; sent rows are recorded by the worker that sent them.

Stopping: ``stop()`` (the first SIGINT/SIGTERM) ends intake; workers finish their current request
within ``grace`` seconds, then are cancelled; a row that did not finish is left unrecorded, so the
next run sends it again. A second signal cancels at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bulkpatch.auth import Auth, BearerToken, ClientCredentials, NoAuth, token_url_for
from bulkpatch.errors import AuthError, ConfigError, InputError, WorkerError
from bulkpatch.ledger import LedgerIndex, LedgerWriter, RowResult, Status, input_identity, open_ledger
from bulkpatch.mapping import Mapper, PathTemplate, Rejected, Request
from bulkpatch.options import RunOptions
from bulkpatch.pacing import Pacer
from bulkpatch.reader import Format, InputFile, Record
from bulkpatch.retry import RetryPolicy
from bulkpatch.sender import Attempt, Sender
from bulkpatch.stats import Tally
from bulkpatch.transport import AiohttpTransport, Transport
from bulkpatch.worker_processes import ProcessTransport

#: open files beyond one per connection: input, ledger, log, stdio, the token endpoint
_SPARE_FILES = 32
#: callback for attempt-level events: (event name, fields); fields never hold secrets
EventSink = Callable[[str, dict[str, Any]], None]


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
    ) -> None:
        self.options = options
        self._transport = transport
        self._events = events
        self._sleep_impl = sleep or asyncio.sleep
        self._stop_event: asyncio.Event | None = None
        self._stopping = False
        self._fatal: BaseException | None = None
        #: outcomes recorded so far by this run (read by progress displays)
        self.tally = Tally()
        #: rows being sent right now
        self.in_flight = 0
        self.sender: Sender | None = None
        self.already_done = 0
        self.rows_read = 0
        #: True when --limit ended intake before the end of the input
        self.limited = False
        self.source: InputFile | None = None
        self.pacer: Pacer | None = None
        self.started = time.monotonic()

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
        source, mapper, records = _open_input(options)
        self.source = source
        own_transport = self._transport is None
        transport = self._transport or _transport_for(options)
        writer: LedgerWriter | None = None
        try:
            binding = {
                "input": input_identity(options.input),
                "format": source.format.value,
                "path_template": options.path,
                "method": options.method.upper(),
            }
            writer, index = open_ledger(options.ledger_path, binding)
            if writer.error is not None:
                raise writer.error
            writer.on_error = self._fail
            if isinstance(transport, ProcessTransport):
                await transport.start()
            auth = self._auth(transport)
            await auth.header()  # a bad secret stops the run here, before any row is sent
            self.pacer = Pacer(
                options.concurrency,
                rate=options.rate,
                sleep=self._sleep,
                on_change=self._pace_changed,
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
            )
            self.started = time.monotonic()
            cpu_started = time.process_time()
            writer.write_event("run", event="start", options=_loggable(options))
            interrupted = await self._drive(
                self._work(records, mapper, writer, index), sender, writer, index, handle_signals
            )
            elapsed = time.monotonic() - self.started
            cpu = time.process_time() - cpu_started
            writer.write_event(
                "run",
                event="interrupted" if interrupted else "end",
                elapsed_s=round(elapsed, 3),
                **self.tally.as_dict(),
            )
        finally:
            source.close()
            if writer is not None:
                writer.close()
            if own_transport:
                await transport.close()
        if self._fatal is not None:
            raise self._fatal
        return RunResult(
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
        )

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
            for sig in (signal.SIGINT, signal.SIGTERM):
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
    ) -> Iterator[Request]:
        """Yield the requests to send; record rows that will not be sent."""
        done = index.done_rows(retry_failed=self.options.retry_failed)
        done_len = len(done)
        tally_add = self.tally.add
        budget = self.options.limit
        try:
            for record in records:
                if self._stopping:
                    return
                row = record.row
                if row < done_len and done[row]:
                    self.rows_read += 1
                    self.already_done += 1
                    continue
                if budget is not None:
                    if budget == 0:
                        self.limited = True
                        return
                    budget -= 1
                self.rows_read += 1
                mapped = mapper.map(record)
                if type(mapped) is Request:
                    yield mapped
                else:
                    assert isinstance(mapped, Rejected)
                    result = _unsent(mapped)
                    writer.write(result)
                    index.set(row, result.status)
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
        for request in work:
            self.in_flight += 1
            try:
                result = await send(request)
            except _Interrupted:
                return
            except (AuthError, WorkerError) as exc:
                self._fail(exc)
                return
            finally:
                self.in_flight -= 1
            write(result)
            index.set(result.row, result.status)
            tally_add(result)

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

    def _auth(self, transport: Transport) -> Auth:
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
            )
        return NoAuth()

    def _fail(self, error: BaseException) -> None:
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


def _unsent(rejected: Rejected) -> RowResult:
    """The ledger record of a row that was not sent."""
    status = Status(rejected.status)
    return RowResult(rejected.row, rejected.line, rejected.key, status, None, 0, rejected.reason)


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
        "retry_failed": options.retry_failed,
        "limit": options.limit,
        "headers": sorted(options.headers),
        "auth": "token" if options.token else "client_credentials" if options.client_id else None,
    }
