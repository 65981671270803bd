"""The settings of one run, checked before anything is sent."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from yarl import URL

from bulkpatch.defaults import DEFAULT_PATH
from bulkpatch.errors import ConfigError
from bulkpatch.records.resume import RetryFailed
from bulkpatch.rows.mapping import PathTemplate
from bulkpatch.rows.reader import is_stream
from bulkpatch.rows.schema import Schema

#: most shards a job may be split into (the resume index assumes shards of ≥ 1/256 of the rows)
MAX_SHARDS = 256
_METHODS = frozenset({"PATCH", "PUT", "POST", "DELETE", "GET"})
_HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
#: what ``headers=`` takes: a mapping, or ``'Name: value'`` strings, or ``(name, value)`` pairs
Headers = Mapping[str, str] | Iterable[str | tuple[str, str]]


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Everything ``bulkpatch run`` needs; see the README for each field's meaning."""

    input: str
    base_url: str | None = None
    format: str | None = None
    path: str = DEFAULT_PATH
    method: str = "PATCH"
    schema: Schema = Schema.WORKLOAD
    concurrency: int = 16
    #: worker processes that send the requests; 1 sends from this process
    processes: int = 1
    rate: float | None = None
    max_attempts: int = 5
    timeout: float = 30.0
    headers: dict[str, str] = field(default_factory=dict)
    ledger: str | None = None
    #: which failed rows to send again: none, transient ones (5xx, 429, timeouts...), or all
    retry_failed: RetryFailed = RetryFailed.NONE
    #: resend a POST after a timeout or dropped connection, although it may have been applied
    retry_unsafe: bool = False
    #: seconds the API may stay unreachable (every connection refused) before the run stops
    max_outage: float = 300.0
    #: the memory (SQLite) to use, and heal: every key that failed is sent again; None: the memory
    #: beside the ledger (``bulkpatch-memory.db``), failed rows resumed as the ledger says
    state: str | None = None
    #: send every row, whatever the memory proves (it still records what is applied)
    full: bool = False
    #: archived ledgers of a changed input kept beside the ledger (the oldest removed first)
    keep_ledgers: int = 7
    #: read the live workloads first and send only the rows that change something
    only_changed: bool = False
    #: (K, N): send only the rows whose key hashes to shard K of N; None: every row
    shard: tuple[int, int] | None = None
    #: handle at most this many rows not done yet, then stop (a canary run); None: all
    limit: int | None = None
    dry_run: bool = False
    #: a bearer token (``BULKPATCH_TOKEN``); never logged
    token: str | None = field(default=None, repr=False)
    #: OAuth2 client credentials (``BULKPATCH_CLIENT_ID`` / ``BULKPATCH_CLIENT_SECRET``)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    token_url: str | None = None
    #: seconds the first SIGINT/SIGTERM waits for in-flight requests before cancelling them
    grace: float = 8.0

    def __post_init__(self) -> None:
        self._coerce()
        if not self.dry_run and not self.base_url:
            raise ConfigError("--base-url (or BULKPATCH_BASE_URL) is required")
        if self.base_url:
            object.__setattr__(self, "base_url", check_url("--base-url", self.base_url))
        if self.token_url:
            object.__setattr__(self, "token_url", check_url("--token-url", self.token_url))
        object.__setattr__(self, "method", self.method.upper())
        if self.method not in _METHODS:
            raise ConfigError(f"--method must be one of {', '.join(sorted(_METHODS))}")
        _positive("--concurrency", self.concurrency)
        _positive("--max-attempts", self.max_attempts)
        _positive("--timeout", self.timeout)
        _positive("--max-outage", self.max_outage, zero=True)
        if self.rate is not None:
            _positive("--rate", self.rate)
        if self.limit is not None:
            _positive("--limit", self.limit)
        _positive("--processes", self.processes)
        if self.processes > 64:
            raise ConfigError("--processes above 64 is not supported")
        if self.processes > self.concurrency:
            raise ConfigError(
                f"--processes {self.processes} is more than --concurrency {self.concurrency}:"
                " each process needs at least one request in flight"
            )
        if self.concurrency > 10_000:
            raise ConfigError("--concurrency above 10000 is not supported")
        for name in self.headers:
            if name.lower() in _HOP_HEADERS:
                raise ConfigError(f"-H {name} is set by bulkpatch itself and cannot be overridden")
        secrets = {
            "BULKPATCH_TOKEN": self.token,
            "BULKPATCH_CLIENT_ID": self.client_id,
            "BULKPATCH_CLIENT_SECRET": self.client_secret,
        }
        for what, text in [*secrets.items(), *((f"-H {n}", f"{n}: {v}") for n, v in self.headers.items())]:
            if text and not _is_text(text):
                raise ConfigError(f"{what} holds bytes that are not UTF-8 text")
        for what, secret in secrets.items():
            if secret is not None and (not secret.strip() or _CONTROL(secret)):
                raise ConfigError(
                    f"{what} must be one line of visible text (it is blank or holds control characters)"
                )
        if (self.token or self.client_id) and any(n.lower() == "authorization" for n in self.headers):
            raise ConfigError(
                "-H Authorization and BULKPATCH_TOKEN/BULKPATCH_CLIENT_ID both set the Authorization header;"
                " keep one"
            )
        if self.token and (self.client_id or self.client_secret):
            raise ConfigError(
                "set either BULKPATCH_TOKEN or BULKPATCH_CLIENT_ID/BULKPATCH_CLIENT_SECRET, not both"
            )
        if bool(self.client_id) != bool(self.client_secret):
            raise ConfigError("BULKPATCH_CLIENT_ID and BULKPATCH_CLIENT_SECRET go together")
        if self.shard is not None:
            k, n = self.shard
            if not (1 <= n <= MAX_SHARDS and 0 <= k < n):
                raise ConfigError(f"--shard K/N needs 0 <= K < N <= {MAX_SHARDS}, got {k}/{n}")
        if self.only_changed:
            if self.input in ("-", "<rows>"):
                raise ConfigError("--only-changed reads the input twice (plan, then run): it needs a file")
            check_plannable(self)
        if (self.state or self.shard) and not PathTemplate(self.path).fields:
            # Without a {field} in the path every row has the same (empty) key.
            raise ConfigError("--state and --shard tell rows apart by key: they need a --path with a {field}")
        if self.state is not None and not self.dry_run:
            for other, what in ((self.ledger_path, "--ledger"), (self.input, "the input")):
                if _same_file(self.state_path or self.state, other):
                    raise ConfigError(
                        f"--state {self.state} is {what} itself; name another file for the memory"
                    )
        if self.keep_ledgers < 0:
            raise ConfigError(f"--keep-ledgers must be 0 or more, got {self.keep_ledgers}")
        if not self.ledger and not self.dry_run and is_stream(self.input):
            raise ConfigError(
                f"reading {self.input} (a pipe) needs --ledger PATH to record and resume the run"
            )

    def _coerce(self) -> None:
        """Accept the library's plain spellings: ``retry_failed=True`` or ``"transient"``,
        ``schema="any"``, ``shard="2/4"``, ``headers=["Name: value"]``, as the command line does."""
        retry = self.retry_failed
        if isinstance(retry, bool):
            retry = RetryFailed.ALL if retry else RetryFailed.NONE
        try:
            object.__setattr__(self, "retry_failed", RetryFailed(retry))
            object.__setattr__(self, "schema", Schema(self.schema))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if isinstance(self.shard, str):
            object.__setattr__(self, "shard", parse_shard(self.shard, dict(os.environ)))
        object.__setattr__(self, "headers", parse_headers(self.headers))

    @property
    def ledger_path(self) -> str:
        """The ledger's path: ``--ledger``, else beside the input; one per shard either way."""
        if self.ledger is None:
            return f"{self.input}{self.shard_suffix}.ledger.jsonl"
        return self._per_shard(self.ledger)

    @property
    def state_path(self) -> str | None:
        """``--state``'s path; each shard keeps its own (they run at the same time)."""
        return None if self.state is None else self._per_shard(self.state)

    @property
    def memory_path(self) -> str | None:
        """The memory: ``--state``, else ``bulkpatch-memory.db`` beside the ledger (one per
        shard); None when the ledger is no regular file (``/dev/null``): such a run keeps no
        records, so it proves nothing and sends every row."""
        if self.state is not None:
            return self.state_path
        ledger = self.ledger_path
        if os.path.exists(ledger) and not os.path.isfile(ledger):
            return None
        name = f"bulkpatch-memory{self.shard_suffix}.db"
        return os.path.join(os.path.dirname(ledger), name)

    def _per_shard(self, path: str) -> str:
        """``path`` with the shard's suffix before its extension (``s.db`` → ``s.shard-0-of-4.db``)."""
        if self.shard is None or path == os.devnull or (not os.path.isfile(path) and os.path.exists(path)):
            return path
        stem, dot, ext = path.rpartition(".")
        return f"{stem}{self.shard_suffix}.{ext}" if dot and "/" not in ext else f"{path}{self.shard_suffix}"

    @property
    def shard_suffix(self) -> str:
        return "" if self.shard is None else f".shard-{self.shard[0]}-of-{self.shard[1]}"

    @property
    def shard_rate(self) -> float | None:
        """This process's share of ``--rate``: the rate is the whole job's, shared by the shards."""
        if self.rate is None or self.shard is None:
            return self.rate
        return self.rate / self.shard[1]


_CONTROL = re.compile(r"[\x00-\x1f\x7f]").search
_DIGITS = re.compile(r"\s*[0-9]{1,9}\s*").fullmatch
#: what stands before the last "@" of an authority: user and password, never to be echoed
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?/*)[^/?#]*@")


def check_url(option: str, url: str) -> str:
    """Refuse anything but an absolute http(s) URL with a valid host name, a valid port, and no
    credentials, query or fragment; return it in ASCII (an IDN host in punycode). The URL is echoed
    in the error only with any credentials masked."""
    shown = safe_url(url)
    if _CONTROL(url) or " " in url.strip():
        raise ConfigError(f"{option} must be a URL without spaces or control characters")
    if "@" in url.split("?")[0].split("#")[0]:
        raise ConfigError(f"{option} must not carry credentials ({shown}); use the environment variables")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{option} is not a valid URL ({shown}): {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{option} must be an http:// or https:// URL, got {shown!r}")
    if port == 0:
        raise ConfigError(f"{option} has port 0 ({shown})")
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        raise ConfigError(f"{option} must not have a ?query or #fragment ({shown}); put paths in --path")
    return _ascii_url(option, url, shown)


def _ascii_url(option: str, url: str, shown: str) -> str:
    """``url`` as the client sends it; a host name that the IDNA codec refuses (an empty label as
    in ``a..b``, a label over 63 characters, an ``xn--`` label that is not punycode) would end
    the first request in a UnicodeError: refuse it now."""
    try:
        encoded = URL(url.strip())
        host = encoded.raw_host or ""
        if not encoded.is_absolute() or ":" in host:  # an IPv6 address: no labels to check
            return url
        host.encode("idna")  # what the resolver does
        URL(str(encoded), encoded=True).host  # what the client does  # noqa: B018
    except (UnicodeError, ValueError):
        raise ConfigError(
            f"{option} has an invalid host name ({shown}): each dot-separated part must be 1 to 63"
            " characters, and one starting xn-- valid punycode"
        ) from None
    return url if url.isascii() else str(encoded)


def safe_url(url: str) -> str:
    """``url`` with anything that may be a user name or password replaced by ``…``."""
    return _USERINFO.sub(lambda m: m.group(1) + "…@", url)


def parse_shard(text: str, environ: dict[str, str] | None = None) -> tuple[int, int]:
    """``"K/N"`` → (K, N); ``"N"`` alone takes K from ``JOB_COMPLETION_INDEX`` (a Kubernetes
    Indexed Job sets it in each pod)."""
    k_text, sep, n_text = text.partition("/")
    if not sep:
        n_text = text
    if not _DIGITS(n_text) or (sep and not _DIGITS(k_text)):
        raise ConfigError(f"--shard takes K/N (e.g. 0/4) or N, got {text!r}")
    if not sep:
        k_text = (environ or {}).get("JOB_COMPLETION_INDEX", "")
        if not k_text:
            raise ConfigError(
                "--shard N needs JOB_COMPLETION_INDEX (a Kubernetes Indexed Job); else --shard K/N"
            )
        if not _DIGITS(k_text):
            raise ConfigError(
                f"JOB_COMPLETION_INDEX must be a number (the shard K of --shard N), got {k_text!r}"
            )
    return int(k_text), int(n_text)


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` → ``("Name", "value")``."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n"):
        # The value may be a secret: never echo it.
        raise ConfigError("-H takes 'Name: value' (a header name, a colon, then the value)")
    if "\r" in value or "\n" in value:
        raise ConfigError(f"-H {name}: the value must be one line")
    return name, value.strip()


def _same_file(a: str, b: str) -> bool:
    """True when two paths name one file (or would: the same absolute path)."""
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def parse_headers(headers: Headers) -> dict[str, str]:
    """``headers=`` as a dict, from a mapping, ``'Name: value'`` strings or ``(name, value)`` pairs."""
    if isinstance(headers, Mapping):
        pairs: Iterable[object] = headers.items()
    elif isinstance(headers, (str, bytes)) or not isinstance(headers, Iterable):
        raise ConfigError(_HEADERS_TAKE + f", not {type(headers).__name__}")
    else:
        pairs = headers
    parsed: dict[str, str] = {}
    for item in pairs:
        if isinstance(item, str):
            name, value = parse_header(item)
        elif isinstance(item, tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
            name, value = parse_header(f"{item[0]}: {item[1]}")
        else:
            # The item may hold a secret: name its type, never its value.
            raise ConfigError(_HEADERS_TAKE + f"; one item is a {type(item).__name__}")
        parsed[name] = value
    return parsed


_HEADERS_TAKE = "headers= takes a mapping, 'Name: value' strings or (name, value) pairs of strings"


def _is_text(value: str) -> bool:
    """False for strings that carry undecodable bytes (as surrogates) from argv or environ."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _positive(option: str, value: float, *, zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{option} must be a {'' if zero else 'positive '}finite number, got {value}")


def check_plannable(options: RunOptions) -> None:
    """Plans compare workload fields: the default path, PATCH and the workload schema only."""
    if options.path != DEFAULT_PATH or options.method != "PATCH" or options.schema is not Schema.WORKLOAD:
        raise ConfigError(
            "plan and verify compare workloads: they need the default --path, --method PATCH"
            " and --schema workload"
        )
