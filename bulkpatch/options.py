"""The settings of one run, checked before anything is sent."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from bulkpatch.defaults import DEFAULT_PATH
from bulkpatch.errors import ConfigError
from bulkpatch.option_values import (
    CONTROL,
    check_url,
    parse_headers,
    parse_shard,
)
from bulkpatch.records.guard import same_file
from bulkpatch.records.resume import RetryFailed
from bulkpatch.rows.exact import is_text
from bulkpatch.rows.mapping import PathTemplate
from bulkpatch.rows.reader import is_stream
from bulkpatch.rows.schema import Schema

#: most shards a job may be split into (the resume index assumes shards of ≥ 1/256 of the rows)
MAX_SHARDS = 256
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
            if text and not is_text(text):
                raise ConfigError(f"{what} holds bytes that are not UTF-8 text")
        for what, secret in secrets.items():
            if secret is not None and (not secret.strip() or CONTROL(secret)):
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
                if same_file(self.state_path or self.state, other):
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
        return os.path.join(os.path.dirname(ledger), f"bulkpatch-memory{self.shard_suffix}.db")

    @property
    def other_memory(self) -> str | None:
        """The memory beside the ledger when ``--state`` names another one, if it exists: runs
        recorded in one are not seen through the other."""
        beside = os.path.join(os.path.dirname(self.ledger_path), f"bulkpatch-memory{self.shard_suffix}.db")
        if self.state is None or not os.path.isfile(beside) or same_file(beside, self.state_path or ""):
            return None
        return beside

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
