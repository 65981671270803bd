"""Building a run from its options: the input, the mapper, the transport, the headers, the auth.

Everything here happens before the first request, so every mistake found here is a
configuration error (exit 2) with nothing sent.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from typing import Any

from bulkpatch.engine.outage import OutageGate
from bulkpatch.engine.pacing import Pacer
from bulkpatch.engine.retry import RetryPolicy
from bulkpatch.engine.sender import Attempt, Sender
from bulkpatch.engine.stopping import StopToken
from bulkpatch.errors import ConfigError
from bulkpatch.http.auth import Auth, BearerToken, ClientCredentials, NoAuth, token_url_for
from bulkpatch.http.redact import Redactor
from bulkpatch.http.transport import AiohttpTransport, Transport
from bulkpatch.http.worker_processes import ProcessTransport
from bulkpatch.options import RunOptions
from bulkpatch.records.target import Target
from bulkpatch.rows.mapping import BODYLESS, Mapper, PathTemplate, Request
from bulkpatch.rows.reader import Format, InputFile, Record, RowsInput

#: open files beyond one per connection: input, ledger, log, stdio, the token endpoint
SPARE_FILES = 32
#: a row → fields function the library may pass (the path fields included in what it returns)
Transform = Callable[[dict[str, Any]], dict[str, Any]]
Source = InputFile | RowsInput


def open_input(
    options: RunOptions,
    rows: Iterable[Any] | AsyncIterable[Any] | None = None,
    transform: Transform | None = None,
) -> tuple[Source, Mapper, Iterator[Record | None]]:
    """Open the rows (a file, or ``rows`` given in code) and the mapper that turns them into requests."""
    template = PathTemplate(options.path)
    source: Source = RowsInput(rows) if rows is not None else InputFile(options.input, options.format)
    try:
        records: Iterator[Record | None] = iter(source)
        mapper = Mapper(
            template,
            schema=options.schema,
            method=options.method,
            fmt=source.format,
            header=source.header if source.format is Format.CSV else None,
        )
        if source.format is Format.JSONL and rows is None and transform is None:
            # A template naming a field that the first readable record lacks would fail every
            # row: refuse it up front instead.
            first: list[Record | None] = []
            for record in records:
                first.append(record)
                if record is not None and record.fields is not None:
                    mapper.check_fields(record.fields)
                    break
            records = itertools.chain(first, records)
        if transform is not None:
            records = _transformed(records, transform)
    except BaseException:
        source.close()
        raise
    return source, mapper, records


def _transformed(records: Iterator[Record | None], transform: Transform) -> Iterator[Record | None]:
    for record in records:
        if record is not None and record.fields is not None:
            try:
                fields = transform(record.fields)
            except Exception as exc:  # the caller's code: its failure makes the row invalid
                record.fields, record.error = None, f"transform failed: {type(exc).__name__}: {exc}"
            else:
                if isinstance(fields, dict):
                    record.fields = fields
                else:
                    record.fields, record.error = (
                        None,
                        f"transform returned {type(fields).__name__}, not a dict",
                    )
        yield record


def ensure_open_files(needed: int) -> None:
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


def transport_for(
    options: RunOptions, *, body_limit: int | None = None
) -> AiohttpTransport | ProcessTransport:
    """The HTTP client the options ask for: in this process, or in ``--processes`` workers;
    ``body_limit`` (bytes of an answer kept) for live reads, always in this process."""
    headers = base_headers(options)
    if body_limit is not None:
        return AiohttpTransport(limit=10, timeout=options.timeout, headers=headers, body_limit=body_limit)
    if options.processes > 1:
        return ProcessTransport(
            processes=options.processes,
            limit=options.concurrency,
            timeout=options.timeout,
            headers=headers,
        )
    return AiohttpTransport(limit=options.concurrency + 2, timeout=options.timeout, headers=headers)


def base_headers(options: RunOptions) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "bulkpatch"}
    if options.method not in BODYLESS:
        headers["Content-Type"] = "application/json"
    headers.update(options.headers)
    return headers


def redactor_for(options: RunOptions) -> Redactor:
    """Every secret the options know of; OAuth tokens join it as they are issued."""
    return Redactor([options.token, options.client_secret, *options.headers.values()])


def auth_for(
    options: RunOptions,
    transport: Transport,
    redact: Redactor,
    on_renew: Callable[[float], None] | None = None,
) -> Auth:
    if options.token:
        return BearerToken(options.token)
    if options.client_id and options.client_secret:
        url = options.token_url or token_url_for(options.base_url or "")
        return ClientCredentials(
            transport, url, options.client_id, options.client_secret, on_renew=on_renew, on_token=redact.add
        )
    return NoAuth()


def target_for(options: RunOptions) -> Target:
    """The run's target in the memory: method, base URL, path template, headers, credentials."""
    credential, secret = "", False
    if options.client_id:
        credential = f"client {options.client_id}"
    elif options.token:
        credential, secret = options.token, True
    return Target(options.method, options.base_url or "", options.path, options.headers, credential, secret)


def loggable(options: RunOptions) -> dict[str, Any]:
    """The options worth recording in the ledger: no secrets, no header values."""
    return {
        "method": options.method,
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
        "state": options.state,
        "full": options.full,
        "headers": sorted(options.headers),
        "auth": "token" if options.token else "client_credentials" if options.client_id else None,
    }


async def build_sender(
    options: RunOptions,
    transport: Transport,
    redact: Redactor,
    *,
    stop: StopToken,
    clock: Callable[[], float],
    emit: Callable[[str, dict[str, Any]], None],
    given_transport: bool,
) -> tuple[Auth, Pacer, OutageGate, Sender]:
    """The sender and what it passes through: auth (checked now: a bad secret stops the run here,
    before any row is sent), the pacer, the outage gate. Their decisions go to ``emit``."""
    auth = auth_for(
        options,
        transport,
        redact,
        on_renew=lambda lifetime: emit("token_renewed", {"lifetime_s": round(lifetime, 1)}),
    )
    await auth.header()

    def paced(what: str, value: int, why: str) -> None:
        emit(f"{what}_changed", {"value": value, "reason": why})

    def retry_scheduled(request: Request, attempt: Attempt, delay: float) -> None:
        fields = {"row": request.row, "key": request.key, "http_status": attempt.status}
        fields |= {"error": attempt.error, "delay_s": round(delay, 3), "retry_after": attempt.retry_after}
        emit("retry_scheduled", fields)

    pacer = Pacer(options.concurrency, rate=options.shard_rate, stop=stop, on_change=paced)
    outage = OutageGate(max_outage=options.max_outage, clock=clock, sleep=stop.sleep, on_change=emit)
    sender = Sender(
        transport,
        options.base_url or "",
        method=options.method,
        policy=RetryPolicy(max_attempts=options.max_attempts),
        auth=auth,
        pacer=pacer,
        stop=stop,
        on_retry=retry_scheduled,
        outage=outage,
        redact=redact,
        retry_unsafe=options.retry_unsafe,
        # A transport of the caller's (a MockTransport, say) has none of the run's headers.
        headers=base_headers(options) if given_transport else None,
    )
    return auth, pacer, outage, sender
