"""The settings of one run, checked before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bulkpatch.errors import ConfigError
from bulkpatch.mapping import DEFAULT_PATH
from bulkpatch.schema import Schema

_METHODS = frozenset({"PATCH", "PUT", "POST", "DELETE", "GET"})
_HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


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
    retry_failed: bool = False
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
        if not self.dry_run and not self.base_url:
            raise ConfigError("--base-url (or BULKPATCH_BASE_URL) is required")
        if self.base_url:
            check_url("--base-url", self.base_url)
        if self.token_url:
            check_url("--token-url", self.token_url)
        if self.method.upper() not in _METHODS:
            raise ConfigError(f"--method must be one of {', '.join(sorted(_METHODS))}")
        _positive("--concurrency", self.concurrency)
        _positive("--max-attempts", self.max_attempts)
        _positive("--timeout", self.timeout)
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
        if self.token and (self.client_id or self.client_secret):
            raise ConfigError(
                "set either BULKPATCH_TOKEN or BULKPATCH_CLIENT_ID/BULKPATCH_CLIENT_SECRET, not both"
            )
        if bool(self.client_id) != bool(self.client_secret):
            raise ConfigError("BULKPATCH_CLIENT_ID and BULKPATCH_CLIENT_SECRET go together")
        if self.input == "-" and not self.ledger and not self.dry_run:
            raise ConfigError("reading stdin needs --ledger PATH to record and resume the run")

    @property
    def ledger_path(self) -> str:
        return self.ledger or f"{self.input}.ledger.jsonl"


def check_url(option: str, url: str) -> None:
    """Refuse anything but an absolute http(s) URL without credentials in it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{option} must be an http:// or https:// URL, got {url!r}")
    if parts.username or parts.password:
        raise ConfigError(f"{option} must not carry credentials; use the environment variables")


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


def _is_text(value: str) -> bool:
    """False for strings that carry undecodable bytes (as surrogates) from argv or environ."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _positive(option: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{option} must be positive, got {value}")
