"""What a run tells the outside: a status snapshot while it goes, a ``RunResult`` when it ends.

Displays (progress bars, log lines) read only ``RunStatus``: a frozen copy of the counters,
taken when they ask, so nothing outside the engine reads or changes its internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bulkpatch.records.ledger import Status
from bulkpatch.records.stats import Tally


@dataclass(frozen=True, slots=True)
class RunStatus:
    """A run as it stands right now."""

    #: the input's name as given
    input: str
    #: the input's format once it is open (``"csv"``, ``"jsonl"``), else None
    format: str | None = None
    #: True once the configuration is checked and sending has begun
    ready: bool = False
    #: monotonic time the sending began
    started: float = 0.0
    #: rows this run recorded, by status
    counts: dict[Status, int] = field(default_factory=dict)
    #: rows passed over because the ledger already answered the same request
    already_done: int = 0
    #: rows read from the input so far
    rows_read: int = 0
    #: bytes consumed from the input file (compressed bytes for gzip)
    bytes_read: int = 0
    #: rows between a failed attempt and their final answer
    retrying: int = 0
    #: rows being sent right now
    in_flight: int = 0
    #: seconds left of a pause every worker waits out (the server asked, and overload is a pattern)
    paused_for: float = 0.0
    #: seconds since the API stopped answering at all, or 0
    outage_for: float = 0.0
    #: requests allowed in flight now, and at most (None before sending begins)
    concurrency: int | None = None
    max_concurrency: int | None = None
    #: requests per second at most now (``--rate`` or learned), or None
    rate: float | None = None
    #: the quota the server announces (``300 per 1 s``), or None
    quota: str | None = None
    stopping: bool = False

    @property
    def done(self) -> int:
        """Rows this run recorded."""
        return sum(self.counts.values())


@dataclass
class RunResult:
    """What a run did, and the state of the whole ledger after it."""

    #: outcomes recorded by this run
    tally: Tally
    #: latest status of every row in the ledger, this run and earlier ones
    state: dict[Status, int]
    #: rows not sent because the ledger already answered the same request
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
    #: rows whose request differs from the one the ledger or the sync state last recorded for them
    changed: int = 0
    #: keys that more than one row sent by this run was for
    repeated_keys: int = 0
    #: where the ledger of an earlier run was kept because the input had changed since
    archived_ledger: str | None = None
    #: ``--state``, when the run was given one
    state_path: str | None = None
    #: the memory the run used (``--state``, or the one beside the ledger), or None
    memory_path: str | None = None
    #: keys the previous complete run had and this run's input has not (deleted at the source)
    gone: int = 0
    #: rows left to the other shards (``--shard``), and this run's shard (K, N)
    other_shards: int = 0
    shard: tuple[int, int] | None = None
    #: this process's ``--rate`` (a shard's share of the job's rate), or None
    rate: float | None = None
    #: rows of the whole ledger whose failure may pass another time (``--retry-failed`` resends them)
    transient_failed: int = 0

    @property
    def exit_code(self) -> int:
        """0 all ok, skipped or unchanged; 1 some failed or invalid; 130 interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.state[Status.FAILED] or self.state[Status.INVALID] else 0
