"""What a finished ``bulkpatch run`` tells the outside: one flat record for every listener.

The metrics file, the webhook and the last log line say the same things about a run, and they
must agree: this record is built once, after the exit status is known, from the run's result
(or the partial result an error carried, or nothing for a run refused before it began). It
holds counts, names of local files and a one-line error, never a secret or a request's URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bulkpatch.records.ledger import Status
from bulkpatch.records.results import RunResult

#: outcome classes of the requests sent: status classes, then the ways a request gets no answer
REQUEST_OUTCOMES = ("1xx", "2xx", "3xx", "4xx", "5xx", "timeout", "connect", "disconnect", "cancelled")
#: the row "statuses" a run counts: the ledger's, and rows passed over as done before
ROW_STATUSES = (*(status.value for status in Status), "already_done")


@dataclass(frozen=True)
class Outcome:
    """A run as its owner sees it at the end."""

    exit_code: int
    #: when it ended (seconds since the epoch) and how long it took
    finished_at: float
    duration_s: float
    #: False when the run was refused before it sent anything (a configuration error)
    began: bool = False
    #: rows of this run by status (``ROW_STATUSES``), and of the whole ledger by latest status
    rows: dict[str, int] = field(default_factory=dict)
    ledger_rows: dict[str, int] = field(default_factory=dict)
    #: requests sent, and the same requests by outcome (``REQUEST_OUTCOMES``)
    requests: int = 0
    requests_by_outcome: dict[str, int] = field(default_factory=dict)
    #: attempts scheduled again after a retryable failure
    retries: int = 0
    input: str | None = None
    ledger: str | None = None
    interrupted: bool = False
    #: the one-line error that ended the run early, if one did (secrets and URL credentials masked)
    error: str | None = None
    #: the most common kinds of error: (kind, rows)
    top_errors: tuple[tuple[str, int], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: the ``end`` log event's fields and the webhook's."""
        return {
            "exit_code": self.exit_code,
            "began": self.began,
            "duration_s": round(self.duration_s, 3),
            "rows": self.rows,
            "requests": self.requests,
            "requests_by_outcome": self.requests_by_outcome,
            "retries": self.retries,
            "input": self.input,
            "ledger": self.ledger,
            "ledger_rows": self.ledger_rows,
            "interrupted": self.interrupted,
            "error": self.error,
            "top_errors": [{"error": kind, "rows": n} for kind, n in self.top_errors],
        }


def outcome_of(
    result: RunResult | None,
    *,
    exit_code: int,
    finished_at: float,
    duration_s: float,
    answered: list[int] | None = None,
    unanswered: dict[str, int] | None = None,
    retries: int = 0,
    input: str | None = None,
    ledger: str | None = None,
    error: str | None = None,
) -> Outcome:
    """The outcome of a run that ended with ``exit_code``.

    ``result`` is None for a run refused before it began; ``answered`` counts requests by the
    first digit of their status and ``unanswered`` by transport error kind (the sender's).
    """
    if result is None:
        return Outcome(exit_code, finished_at, duration_s, input=input, ledger=ledger, error=error)
    by_outcome = dict.fromkeys(REQUEST_OUTCOMES, 0)
    for digit, n in enumerate(answered or []):
        if 1 <= digit <= 5:
            by_outcome[f"{digit}xx"] += n
    for kind, n in (unanswered or {}).items():
        by_outcome[kind if kind in by_outcome else "disconnect"] += n
    # Requests cut off by a stop (the grace period ran out) have neither answer nor error.
    by_outcome["cancelled"] = max(0, result.requests - sum(by_outcome.values()))
    tally = result.tally
    rows = {status.value: tally.by_status[status] for status in Status}
    rows["already_done"] = result.already_done
    return Outcome(
        exit_code,
        finished_at,
        duration_s or result.elapsed,
        began=True,
        rows=rows,
        ledger_rows={status.value: result.state.get(status, 0) for status in Status},
        requests=result.requests,
        requests_by_outcome=by_outcome,
        retries=retries,
        input=result.input,
        ledger=result.ledger_path,
        interrupted=result.interrupted,
        error=error,
        top_errors=tuple(tally.errors.most_common(3)),
    )
