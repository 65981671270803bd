"""Send one row's request until it succeeds, fails for good, or runs out of attempts.

The first attempt goes straight out; only a row whose first attempt asks for a retry enters
tenacity's machinery (it costs ~17 us a call, a fifth of a request's whole budget at full speed).
A 401 with renewable credentials renews the token and resends once without spending an attempt.

Some answers say that *every* row would fail; they raise instead of failing the row, so the run
stops with the row unrecorded: a 401 that no renewal cures, a 403 before any request succeeded
(``CredentialsRejected``), and an API that cannot be reached for too long (``ApiUnreachable``,
see ``outage.py``). A POST is not resent after the request may have reached the server (timeout,
dropped connection) unless ``retry_unsafe``: it could be applied twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bulkpatch.engine.outage import OutageGate
from bulkpatch.engine.pacing import Pacer
from bulkpatch.engine.quota import parse_quota
from bulkpatch.engine.retry import (
    OVERLOAD_STATUSES,
    RetryPolicy,
    is_retryable,
    parse_retry_after,
)
from bulkpatch.engine.stopping import StopToken
from bulkpatch.errors import CredentialsRejected, TransportError
from bulkpatch.http.auth import Auth, NoAuth
from bulkpatch.http.redact import Redactor
from bulkpatch.http.transport import Response, Transport
from bulkpatch.records.ledger import GAVE_UP, RowResult, Status
from bulkpatch.rows.mapping import Request

_ERROR_CHARS = 300


@dataclass(slots=True)
class Attempt:
    """The outcome of one attempt (one request, or two with a token renewal)."""

    status: int | None
    error: str | None
    #: seconds the server asked us to wait, if it did
    retry_after: float | None
    retryable: bool
    #: requests this attempt sent
    sent: int


class Sender:
    """Turns a ``Request`` into a ``RowResult``, retrying per the policy."""

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        *,
        method: str = "PATCH",
        policy: RetryPolicy | None = None,
        auth: Auth | None = None,
        pacer: Pacer | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_retry: Callable[[Request, Attempt, float], None] | None = None,
        outage: OutageGate | None = None,
        redact: Redactor | None = None,
        retry_unsafe: bool = False,
        stop: StopToken | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._transport = transport
        self._stop = stop or StopToken(sleep)
        sleep = self._stop.sleep
        self._base = base_url.rstrip("/")
        self._method = method.upper()
        self.policy = policy or RetryPolicy()
        self._auth = auth or NoAuth()
        self._pacer = pacer or Pacer(1 << 30, adaptive=False, clock=clock, stop=self._stop)
        self._sleep = sleep
        self._clock = clock
        self._on_retry = on_retry
        self._wait: Any = None  # tenacity's wait strategy, built with the first retry
        #: rows between a failed attempt and their final answer right now
        self.retrying = 0
        #: headers sent with every request (for a transport that does not add them itself)
        self._headers = dict(headers or {})
        self._static_headers: dict[str, str] | None = None
        self._static_ready = False
        self._outage = outage or OutageGate(threshold=1 << 30, sleep=sleep, clock=clock)
        self._redact = redact or Redactor()
        #: a request that may have reached the server is not resent (a POST could apply twice)
        self._resend_unsure = retry_unsafe or self._method != "POST"
        #: HTTP requests sent so far, token renewals' resends included
        self.requests = 0
        #: rows answered 2xx so far
        self.succeeded = 0
        #: requests answered, by the first digit of their status (``answered[5]``: 5xx)
        self.answered = [0] * 10
        #: requests that had no answer, by ``TransportError.kind`` (connect, timeout, disconnect)
        self.unanswered: dict[str, int] = {}
        #: attempts scheduled again after a retryable failure
        self.retries = 0

    async def send(self, request: Request) -> RowResult | None:
        """The row's outcome; None when the run stopped before it had one (leave it unrecorded)."""
        started = self._clock()
        url = self._base + request.path
        first = await self._attempt(url, request.body)
        if first is _STOPPED:
            return None
        if first.retryable and self.policy.max_attempts > 1:
            self.retrying += 1
            try:
                last, attempts, sent = await self._retry(request, url, first)
            finally:
                self.retrying -= 1
        else:
            last, attempts, sent = first, 1, first.sent
        if last is _STOPPED:
            return None
        ms = round((self._clock() - started) * 1000.0, 2)
        if last.status is not None and 200 <= last.status < 300:
            self.succeeded += 1
            return RowResult(
                request.row, request.line, request.key, Status.OK, last.status, sent, None, ms, request.fp
            )
        error = last.error or "failed"
        if last.retryable:
            error = f"{error} {GAVE_UP} {attempts} attempt{'' if attempts == 1 else 's'})"
        return RowResult(
            request.row, request.line, request.key, Status.FAILED, last.status, sent, error, ms, request.fp
        )

    async def _retry(self, request: Request, url: str, first: Attempt) -> tuple[Attempt, int, int]:
        from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt

        from bulkpatch.engine.backoff import wait_retry_after_or_jitter

        if self._wait is None:
            self._wait = wait_retry_after_or_jitter(self.policy)
        replay = [first]
        sent = 0
        attempts = 0

        async def attempt() -> Attempt:
            nonlocal sent, attempts
            # tenacity's first call replays the attempt already made, so its attempt numbers,
            # stop and wait line up with the row's real attempts.
            if replay:
                outcome = replay.pop()
            elif self._stop.stopped:  # the backoff was cut short: no more attempts for this row
                return _STOPPED
            else:
                outcome = await self._attempt(url, request.body)
            sent += outcome.sent
            attempts += 1
            return outcome

        def before_sleep(state: RetryCallState) -> None:
            self.retries += 1
            if self._on_retry is not None and state.outcome is not None and state.next_action:
                self._on_retry(request, state.outcome.result(), state.next_action.sleep)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_attempts),
            wait=self._wait,
            retry=retry_if_result(_wants_retry),
            sleep=self._sleep,
            before_sleep=before_sleep,
            retry_error_callback=_last_result,
        )
        last: Attempt = await retrying(attempt)
        return last, attempts, sent

    async def _attempt(self, url: str, body: bytes | None, renewed: bool = False) -> Attempt:
        auth = self._auth
        if auth.renewable:
            header = await auth.header()
            headers = {**self._headers, "Authorization": header} if header else self._headers or None
        else:
            # A fixed header: built once, and no await per request.
            if not self._static_ready:
                header = await auth.header()
                self._static_headers = (
                    {**self._headers, "Authorization": header} if header else self._headers or None
                )
                self._static_ready = True
            headers = self._static_headers
        pacer = self._pacer
        if not pacer.try_acquire():
            await pacer.acquire()
            if self._stop.stopped:
                pacer.release()
                return _STOPPED
        try:
            if self._outage.active:
                response = await self._exchange(url, body, headers)
            else:
                # The common case, without the outage gate's extra coroutine.
                self.requests += 1
                try:
                    response = await self._transport.send(self._method, url, body, headers)
                except TransportError as exc:
                    self._unanswered(exc)
                    if exc.kind != "connect" or not self._outage.cannot_connect(self._redact(str(exc))):
                        raise
                    response = await self._exchange(url, body, headers)  # the API is gone: wait for it
                else:
                    self._outage.answered()
        except TransportError as exc:
            pacer.release()
            error = self._redact(str(exc))
            if exc.kind != "connect" and not self._resend_unsure:
                error += f" (a {self._method} is not resent once it may have arrived: see --retry-unsafe)"
                return Attempt(None, error, None, False, 1)
            return Attempt(None, error, None, True, 1)
        if response is None:
            pacer.release()
            return _STOPPED
        status = response.status
        self.answered[status // 100 % 10] += 1
        if 200 <= status < 300:
            pacer.release(ok=True)
            if response.quota is not None:
                self._announced(response.quota)
            return Attempt(status, None, None, False, 1)
        pacer.release(overloaded=status in OVERLOAD_STATUSES, rate_limited=status == 429)
        if response.quota is not None:
            self._announced(response.quota)
        if status == 401 and auth.renewable and not renewed:
            # The token expired or was revoked: renew it and resend, without spending an attempt.
            await auth.renew(headers["Authorization"] if headers else None)
            again = await self._attempt(url, body, renewed=True)
            if again is not _STOPPED:
                again.sent += 1
            return again
        if status == 401 or (status == 403 and self.succeeded == 0):
            why = (
                " after a token renewal"
                if renewed
                else " before any request succeeded"
                if status == 403
                else ""
            )
            answer = describe_error(response, self._redact)
            if isinstance(auth, NoAuth):
                why += "; no credentials are set (BULKPATCH_TOKEN, or BULKPATCH_CLIENT_ID and _SECRET)"
            raise CredentialsRejected(f"credentials rejected: {self._method} {url} answered {answer}{why}")
        retry_after = parse_retry_after(response.retry_after)
        if retry_after is not None:
            retry_after = min(retry_after, self.policy.retry_after_cap)
            pacer.pause(retry_after)
        return Attempt(status, describe_error(response, self._redact), retry_after, is_retryable(status), 1)

    def _announced(self, headers: dict[str, str]) -> None:
        quota = parse_quota(headers, time.time())
        if quota is not None:
            self._pacer.announce(quota)

    async def _exchange(
        self, url: str, body: bytes | None, headers: dict[str, str] | None
    ) -> Response | None:
        """One HTTP exchange, through the outage gate: while the API cannot be reached at all,
        one attempt at a time probes it and the others wait without spending attempts.
        None when the run stopped during an outage."""
        outage = self._outage
        while True:
            probing = outage.active
            if probing:
                await outage.probe.acquire()
                if outage.gave_up is not None:
                    outage.probe.release()
                    raise outage.gave_up
                if not outage.active:
                    outage.probe.release()
                    probing = False
            try:
                self.requests += 1
                response = await self._transport.send(self._method, url, body, headers)
            except TransportError as exc:
                self._unanswered(exc)
                if exc.kind == "connect" and outage.cannot_connect(self._redact(str(exc))):
                    if probing:
                        await outage.wait_before_probe()
                    if self._stop.stopped:
                        return None
                    continue
                raise
            finally:
                if probing:
                    outage.probe.release()
            outage.answered()
            return response

    def _unanswered(self, error: TransportError) -> None:
        self.unanswered[error.kind] = self.unanswered.get(error.kind, 0) + 1


#: what an attempt that never happened returns: the run stopped first
_STOPPED = Attempt(None, "stopped", None, False, 0)


def _wants_retry(outcome: Attempt) -> bool:
    return outcome.retryable


def _last_result(state: Any) -> Attempt:  # a tenacity RetryCallState
    assert state.outcome is not None
    result: Attempt = state.outcome.result()
    return result


def describe_error(response: Response, redact: Callable[[str], str] | None = None) -> str:
    """A one-line reason for a non-2xx answer, with the API's own message when it gave one.

    Understood shapes: the Acronis envelope ``{"error": {"code", "message"}}``, ``{"error": "…"}``,
    ``{"message": "…"}``, FastAPI/pydantic's ``{"detail": "…" | [{"loc", "msg"}]}``, RFC 7807's
    ``{"title", "detail"}``, ``{"errors": [...]}``, OAuth's ``error_description``; else a short
    text body. A redirect says where it pointed.
    """
    message = ""
    try:
        data = orjson.loads(response.body) if response.body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        message = _message_of(data)
    elif response.body and len(response.body) < 200:
        message = response.body.decode("utf-8", "replace")
    line = f"HTTP {response.status}"
    location = getattr(response, "location", None)
    if 300 <= response.status < 400 and location:
        line += f" redirect to {location}"
    if message:
        line += f": {' '.join(message.split())}"
    # Masked before it is cut: a secret straddling the cut would otherwise survive in part.
    return (redact(line) if redact is not None else line)[:_ERROR_CHARS]


def _message_of(data: dict[str, object]) -> str:
    error = data.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        text = error.get("message") or error.get("reason") or ""
        return f"{code}: {text}" if code not in (None, "") else str(text)
    parts = [str(error)] if isinstance(error, str) else []
    for name in ("title", "message", "error_description"):
        if isinstance(data.get(name), str) and data[name] not in parts:
            parts.append(str(data[name]))
    detail = data.get("detail")
    if isinstance(detail, str):
        parts.append(detail)
    items = detail if isinstance(detail, list) else data.get("errors")
    if isinstance(items, list):
        parts.extend(_item_text(item) for item in items[:3])
    return "; ".join(p for p in parts if p)


def _item_text(item: object) -> str:
    if not isinstance(item, dict):
        return str(item)
    text = item.get("msg") or item.get("message") or item.get("detail") or ""
    where = item.get("loc") or item.get("field") or item.get("path")
    if isinstance(where, list):
        where = ".".join(str(part) for part in where)
    return f"{where}: {text}" if where else str(text)
