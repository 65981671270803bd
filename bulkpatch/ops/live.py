"""Reading the live workloads: the list endpoint's cursor pages, and lookups of up to 100 ids a GET.

``run`` only writes; ``export``, ``plan`` and ``verify`` need to read what the API holds now.
Everything goes through a ``Transport`` (aiohttp stays in ``transport.py``). A read is retried as
a row's request is (connection errors, timeouts, 408/425/429/5xx, ``Retry-After`` honoured), a
401 renews an OAuth token once, and a 401 or 403 that stays is ``CredentialsRejected``.

The transport keeps at most ``BODY_KEEP`` bytes of an answer, so a page longer than that comes
back cut. A cut answer is asked for again in halves (half the ``limit``, or half the ids), and
the smaller size is kept for the requests that follow: reading stays correct whatever the size of
a workload, at the price of more requests for large ones.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from bulkpatch.engine.assembly import auth_for, redactor_for
from bulkpatch.engine.retry import RetryPolicy, is_retryable, parse_retry_after
from bulkpatch.engine.sender import describe_error
from bulkpatch.errors import BulkPatchError, ConfigError, CredentialsRejected, TransportError
from bulkpatch.http.auth import Auth, NoAuth
from bulkpatch.http.redact import Redactor
from bulkpatch.http.transport import Transport
from bulkpatch.ops.paging import PagingWatch
from bulkpatch.options import RunOptions

LIST_PATH = "/api/workload_management/v5/workloads"
#: ids the ``workload_id=or(...)`` filter takes at most (the API's documented limit)
MAX_IDS = 100
#: what an id must not hold to go inside ``or(...)``: such ids are looked up one per request
_OR_UNSAFE = frozenset(",()")
#: attribute keys named in ``include_attributes`` at most; beyond, every attribute is asked for
_KEYS_NAMED = 50

#: bytes of an answer kept when reading workloads, by every live read (export, plan, verify,
#: ``run --only-changed``): a page of 100 full workloads is ~68 KB, more than a run keeps of an
#: error body
READ_LIMIT = 8 << 20


class LiveReadError(BulkPatchError):
    """Reading the live workloads failed for good (a refusal, or retries ran out): exit 1."""


class _Cut(Exception):
    """The answer filled the transport's body limit: it was (probably) cut short."""


@dataclass(frozen=True, slots=True)
class Include:
    """What the list answer should carry besides the plain fields (the API leaves both out)."""

    #: True: every attribute; a tuple: these keys only; False: none
    attributes: bool | tuple[str, ...] = True
    allowed_actions: bool = True

    def params(self) -> list[tuple[str, str]]:
        out = []
        if self.attributes is True:
            out.append(("include_all_attributes", "true"))
        elif self.attributes:
            # One comma-separated value; a key with a comma in it needs every attribute instead.
            if len(self.attributes) > _KEYS_NAMED or any("," in key for key in self.attributes):
                out.append(("include_all_attributes", "true"))
            else:
                out.append(("include_attributes", ",".join(self.attributes)))
        if self.allowed_actions:
            out.append(("include_allowed_actions", "true"))
        return out


class LiveReader:
    """GETs against one API root, with retries, token renewal and cut answers asked again smaller."""

    @classmethod
    def for_options(
        cls,
        options: RunOptions,
        transport: Transport,
        *,
        auth: Auth | None = None,
        notice: Callable[[str], None] | None = None,
        page_size: int = 100,
        body_limit: int = READ_LIMIT,
    ) -> LiveReader:
        """A reader with the run's base URL, extra headers, credentials and attempts."""
        if not options.base_url:
            raise ConfigError("--base-url (or BULKPATCH_BASE_URL) is required")
        redact = redactor_for(options)
        if auth is None:
            auth = auth_for(options, transport, redact)
        headers = {"User-Agent": "bulkpatch", **options.headers}
        policy = RetryPolicy(max_attempts=options.max_attempts)
        return cls(
            transport,
            options.base_url,
            auth=auth,
            headers=headers,
            policy=policy,
            page_size=page_size,
            notice=notice,
            body_limit=body_limit,
            redact=redact,
        )

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        *,
        auth: Auth | None = None,
        headers: Mapping[str, str] | None = None,
        policy: RetryPolicy | None = None,
        page_size: int = 100,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        notice: Callable[[str], None] | None = None,
        body_limit: int = READ_LIMIT,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        if not 1 <= page_size <= 1000:
            raise ValueError(f"page_size must be from 1 to 1000, got {page_size}")
        self._transport = transport
        self._url = base_url.rstrip("/") + LIST_PATH
        self._auth = auth or NoAuth()
        self._headers = {"Accept": "application/json", **(headers or {})}
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._notice = notice
        self._redact = redact or Redactor()
        #: bytes of an answer the transport keeps: an answer this long was cut
        self._body_limit = body_limit
        #: list requests sent (retries and cut answers included)
        self.requests = 0
        #: the ``limit`` of list pages; halves when a page comes back cut
        self.page_size = page_size
        #: ids per lookup; halves when a lookup's answer comes back cut
        self.ids_per_request = MAX_IDS

    async def pages(
        self, filters: Sequence[tuple[str, str]], include: Include
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every page of workloads matching ``filters``, following ``paging.cursors.after``."""
        after: str | None = None
        watch = PagingWatch()
        while True:
            params = [*filters, *include.params(), ("limit", str(self.page_size))]
            if after is not None:
                params.append(("after", after))
            try:
                page = await self._get(params)
            except _Cut:
                self.page_size = self._halve(self.page_size, self.page_size, "page size")
                continue
            after = _next_cursor(page)
            problem = watch.problem(page["items"], after)
            if problem is not None:
                raise LiveReadError(f"GET {self._url}: {problem}")
            yield page["items"]
            if after is None:
                return

    async def lookup(self, ids: Sequence[str], include: Include) -> dict[str, dict[str, Any]]:
        """The live workloads among ``ids`` (any number), by id; ids not found are absent."""
        found: dict[str, dict[str, Any]] = {}
        plain = [i for i in dict.fromkeys(ids) if not _OR_UNSAFE.intersection(i)]
        for odd in (i for i in dict.fromkeys(ids) if _OR_UNSAFE.intersection(i)):
            try:
                await self._lookup_some([odd], include, found)
            except _Cut:
                self._halve(1, 1, "ids per lookup")  # raises: one workload is too long to read
        at = 0
        while at < len(plain):
            chunk = plain[at : at + self.ids_per_request]
            try:
                await self._lookup_some(chunk, include, found)
            except _Cut:
                self.ids_per_request = self._halve(len(chunk), self.ids_per_request, "ids per lookup")
                continue
            at += len(chunk)
        return found

    async def _lookup_some(self, ids: list[str], include: Include, found: dict[str, dict[str, Any]]) -> None:
        value = ids[0] if len(ids) == 1 else f"or({','.join(ids)})"
        filters = [("workload_id", value)]
        missing = set(ids)
        after: str | None = None
        while True:  # one page when the API honours limit; more are followed all the same
            params = [*filters, *include.params(), ("limit", str(len(ids)))]
            if after is not None:
                params.append(("after", after))
            page = await self._get(params)
            before = len(missing)
            for item in page["items"]:
                key = str(item.get("id"))
                found[key] = item
                missing.discard(key)
            after = _next_cursor(page)
            # Every id seen, or a page that brought none of them: more pages cannot help (and a
            # server whose cursor never ends would otherwise be paged forever).
            if after is None or not missing or len(missing) == before:
                return

    def _halve(self, cut: int, current: int, what: str) -> int:
        """The size to use after an answer for ``cut`` items came back cut (lookups run a few
        at a time: several may be cut at once, and each must not halve the size again)."""
        if cut <= 1:
            raise LiveReadError(
                f"one workload's answer is longer than the {self._body_limit:,} bytes the client reads"
            )
        smaller = cut // 2
        if smaller >= current:
            return current
        if self._notice is not None:
            self._notice(
                f"answers over {self._body_limit:,} bytes came back cut: {what} lowered to {smaller}"
            )
        return smaller

    async def _get(self, params: list[tuple[str, str]]) -> dict[str, Any]:
        """One list request, retried; the parsed page, or ``_Cut`` when the answer was cut."""
        url = f"{self._url}?{urlencode(params, quote_via=quote)}"
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            headers = dict(self._headers)
            authorization = await self._auth.header()
            if authorization is not None:
                headers["Authorization"] = authorization
            self.requests += 1
            try:
                response = await self._transport.send("GET", url, None, headers)
            except TransportError as exc:
                status, problem, asked = None, self._redact(str(exc)), None
            else:
                status = response.status
                if status == 200:
                    if len(response.body) >= self._body_limit:
                        raise _Cut
                    return _page(response.body)
                if status == 401 and self._auth.renewable and not renewed:
                    renewed = True
                    attempt -= 1
                    await self._auth.renew(authorization)
                    continue
                problem = describe_error(response, self._redact)
                asked = parse_retry_after(response.retry_after)
                if status in (401, 403):
                    raise CredentialsRejected(f"listing workloads: {problem}")
            if not is_retryable(status) or attempt >= self._policy.max_attempts:
                tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise LiveReadError(f"GET {self._url}: {problem}{tries}")
            await self._sleep(self._wait(attempt, asked))

    def _wait(self, attempt: int, asked: float | None) -> float:
        policy = self._policy
        if asked is not None:
            return min(asked, policy.retry_after_cap)
        return random.uniform(0, min(policy.backoff_cap, policy.backoff_base * 2 ** (attempt - 1)))


def _page(body: bytes) -> dict[str, Any]:
    try:
        page = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise LiveReadError("the workloads list answered 200 with a body that is not JSON") from None
    if not isinstance(page, dict) or not isinstance(page.get("items"), list):
        raise LiveReadError('the workloads list answered 200 without an "items" array')
    if not all(isinstance(item, dict) for item in page["items"]):
        raise LiveReadError('the workloads list answered "items" that are not all objects')
    return page


def _next_cursor(page: dict[str, Any]) -> str | None:
    paging = page.get("paging")
    cursors = paging.get("cursors") if isinstance(paging, dict) else None
    after = cursors.get("after") if isinstance(cursors, dict) else None
    return after if isinstance(after, str) and after else None


def list_filters(
    types: Sequence[str] = (), tenant_id: str | None = None, ids: Sequence[str] = (), since: str | None = None
) -> list[tuple[str, str]]:
    """The list endpoint's filters: workload types, a tenant, ids, an RFC 3339 ``updated_at`` floor."""
    filters = []
    for name, values, most in (("type", types, 10), ("workload_id", ids, 100)):
        if len(values) > most:
            raise ConfigError(f"--{name.replace('_', '-')} takes at most {most} values (the API's limit)")
        if values:
            filters.append((name, values[0] if len(values) == 1 else f"or({','.join(values)})"))
    if tenant_id:
        filters.append(("tenant_id", tenant_id))
    if since:
        try:
            parsed = datetime.fromisoformat(since)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise ConfigError("--updated-since takes an RFC 3339 time with a zone, e.g. 2026-01-31T00:00:00Z")
        filters.append(("updated_at", f"ge({since})"))
    return filters
