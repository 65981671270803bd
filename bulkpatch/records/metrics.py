"""``run --metrics-file``: the run's outcome as Prometheus text, for node_exporter's textfile collector.

A nightly job has no process left to scrape when the owner wants to know how last night went,
so the run leaves a file behind: rows by status, requests by outcome, retries, duration, the exit
code, and the time of the last fully successful run. That last one outlives failed runs: a run
that did not exit 0 copies it from the file it replaces, so "no success for 26 hours" can be
alerted on. The file is written whole to a temporary name in the same folder, then renamed:
the collector never reads half a file. Labels carry statuses and outcome classes only, never a
URL, key or secret.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from bulkpatch.errors import ConfigError
from bulkpatch.records.outcome import REQUEST_OUTCOMES, ROW_STATUSES, Outcome

LAST_SUCCESS = "bulkpatch_last_success_timestamp_seconds"


class _OutcomeCollector(Collector):
    """The metric families of one outcome (a custom collector: no ``_created`` series)."""

    def __init__(self, outcome: Outcome, last_success: float | None) -> None:
        self._outcome = outcome
        self._last_success = last_success

    def collect(self) -> Iterator[Metric]:
        o = self._outcome
        rows = CounterMetricFamily(
            "bulkpatch_rows",
            "Rows the last run handled, by outcome (already_done: passed over, done before).",
            labels=["status"],
        )
        for status in ROW_STATUSES:
            rows.add_metric([status], o.rows.get(status, 0))
        yield rows
        ledger = GaugeMetricFamily(
            "bulkpatch_ledger_rows", "Rows of the whole ledger by their latest status.", labels=["status"]
        )
        for status in ROW_STATUSES[:-1]:
            ledger.add_metric([status], o.ledger_rows.get(status, 0))
        yield ledger
        requests = CounterMetricFamily(
            "bulkpatch_requests",
            "HTTP requests the last run sent, by outcome: status class, or why no answer came.",
            labels=["outcome"],
        )
        for name in REQUEST_OUTCOMES:
            requests.add_metric([name], o.requests_by_outcome.get(name, 0))
        yield requests
        yield CounterMetricFamily(
            "bulkpatch_retries", "Attempts the last run scheduled again after a retryable failure.", o.retries
        )
        yield GaugeMetricFamily(
            "bulkpatch_run_duration_seconds", "Wall-clock seconds the last run took.", o.duration_s
        )
        yield GaugeMetricFamily(
            "bulkpatch_exit_code",
            "Exit status of the last run: 0 all rows done, 1 rows failed or the run stopped,"
            " 2 configuration or credentials, 130 interrupted.",
            o.exit_code,
        )
        yield GaugeMetricFamily(
            "bulkpatch_run_began",
            "1 when the last run got as far as sending, 0 when it was refused before (exit 2).",
            1 if o.began else 0,
        )
        yield GaugeMetricFamily(
            "bulkpatch_last_run_timestamp_seconds", "When the last run ended, in Unix time.", o.finished_at
        )
        last = o.finished_at if o.exit_code == 0 else self._last_success
        yield GaugeMetricFamily(
            LAST_SUCCESS,
            "When the last run that exited 0 ended, in Unix time; 0 if none is on record.",
            last or 0.0,
        )


def render(outcome: Outcome, last_success: float | None = None) -> CollectorRegistry:
    """A registry holding ``outcome``'s metrics; ``last_success`` as read from the previous file."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_OutcomeCollector(outcome, last_success))
    return registry


def previous_success(path: str) -> float | None:
    """The last success time the file at ``path`` records; None if it has none (or is unreadable)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 20)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and sample.value > 0:
                    return float(sample.value)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return None


def check_writable(path: str) -> None:
    """Refuse, before anything is sent, a metrics file whose folder cannot take it."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--metrics-file {path!r}: cannot write a file in {folder}")


def write_metrics(path: str, outcome: Outcome) -> None:
    """Replace the file at ``path`` with ``outcome``'s metrics, atomically (temp file + rename).

    Raises ``OSError`` when the folder cannot be written.
    """
    last = None if outcome.exit_code == 0 else previous_success(path)
    write_to_textfile(path, render(outcome, last))
