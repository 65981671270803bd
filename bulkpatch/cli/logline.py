"""Progress as log lines, for when stderr is no terminal: cron, ``kubectl logs``, log shippers.

A live progress bar makes no sense there. Each line starts with an ISO 8601 UTC timestamp, is
written as plain text that nothing wraps (no rich console, no glyphs), and is either
``name=value`` words or one JSON object (``--log-format json``). The first line has no rate
rather than a made-up ``0/s``; later ones measure the interval since the line before. Rates and
ETAs count this run's rows only: on a resume, the rows the ledger already had go by in a blink
and would make the run look far faster than it is.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import orjson

from bulkpatch.records.ledger import Status

if TYPE_CHECKING:
    from bulkpatch.records.results import RunStatus

#: what a log line marks
Event = Literal["start", "progress", "end"]
#: ``text``: ``name=value`` words; ``json``: one JSON object per line
LogFormat = Literal["text", "json"]


class RunLog:
    """Turns run status snapshots into log lines; keeps the marks that rates are measured from."""

    def __init__(self, log_format: LogFormat = "text") -> None:
        if log_format not in ("text", "json"):
            raise ValueError(f"log_format must be 'text' or 'json', not {log_format!r}")
        self.log_format = log_format
        # (monotonic time, this run's rows) at the start line and at the last line
        self._log_start: tuple[float, int] | None = None
        self._log_last: tuple[float, int] | None = None

    def record(
        self, run: RunStatus, event: Event, *, now: float, wall: float, total: int | None
    ) -> dict[str, Any]:
        """What a log line says, as a dict (the JSON form of the line).

        ``now`` is a monotonic time, ``wall`` the time of day; ``total`` the rows expected.
        """
        if event == "start":
            # The start line tells how the run began, not how far it got while the input's rows
            # were being counted: nothing done yet, at the time sending began.
            wall -= max(0.0, now - run.started) if 0 < run.started <= now else 0.0
            now = run.started if 0 < run.started <= now else now
            run = replace(run, counts={}, already_done=0, retrying=0)
        this_run = run.done
        done = this_run + run.already_done
        if total is not None:
            total = max(total, done)
        # The start line has no rate yet; "progress" measures the last interval, "end" the run.
        since = self._log_last if event == "progress" else self._log_start
        rate = None
        if event != "start" and since is not None and now > since[0]:
            rate = (this_run - since[1]) / (now - since[0])
        if event == "start":
            self._log_start = (now, this_run)
        self._log_last = (now, this_run)
        paused = run.paused_for
        eta = None
        if event != "end" and total and rate and done < total and paused <= 0:
            eta = round(min((total - done) / rate, 359_999.0), 1)
        by = run.counts
        return {
            "ts": utc(wall),
            "event": event,
            "done": done,
            "total": total,
            "rate": None if rate is None else round(rate, 1),
            "eta_s": eta,
            "elapsed_s": round(max(0.0, now - run.started), 1),
            **{status.value: by.get(status, 0) for status in Status},
            "already_done": run.already_done,
            "retrying": run.retrying,
            "paused_s": round(paused, 1) if paused > 0 else None,
            "outage_s": round(run.outage_for, 1) if run.outage_for > 0 else None,
            "concurrency": run.concurrency,
        }

    def format(self, record: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
        """One line, without its line ending; ``extra`` fields go last (``name=value`` in text)."""
        if self.log_format == "json":
            return orjson.dumps({**record, **(extra or {})}).decode()
        words = [_text(record), *(f"{name}={value}" for name, value in (extra or {}).items())]
        return " ".join(words)


def utc(timestamp: float) -> str:
    """ISO 8601 in UTC, to the millisecond: ``2025-01-31T09:00:00.000Z``."""
    seconds = int(timestamp)
    millis = int((timestamp - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _text(record: dict[str, Any]) -> str:
    """A log record as one plain line: the timestamp first, then ``name=value`` pairs."""
    total = record["total"]
    words = [record["ts"], "bulkpatch", record["event"], f"rows={record['done']}/{total if total else '?'}"]
    if total:
        words.append(f"pct={record['done'] / total:.1%}")
    if record["rate"] is not None:
        words.append(f"rate={record['rate']:.1f}/s")
    if record["eta_s"] is not None:
        words.append(f"eta={hms(record['eta_s'])}")
    words.append(f"elapsed={hms(record['elapsed_s'])}")
    words += [f"{status.value}={record[status.value]}" for status in Status]
    for name in ("already_done", "retrying"):
        if record[name]:
            words.append(f"{name}={record[name]}")
    if record["paused_s"] is not None:
        words.append(f"paused={record['paused_s']:.0f}s")
    return " ".join(words)


def hms(seconds: float) -> str:
    """``3:02:07``: hours, minutes and seconds."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
