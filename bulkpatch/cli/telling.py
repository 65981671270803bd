"""Telling a run's owner how it went: the metrics file, the webhook, and the last stderr line.

A nightly job runs with nobody watching. Once a ``run`` knows its exit status, whether it
finished, failed, stopped early or was refused, it leaves the same story in each place the owner
asked for: ``--metrics-file`` (Prometheus text), ``--notify`` (a JSON POST) and the ``end`` line
on stderr (with ``--log-format json``, an ``end`` event that carries the summary). None of them
may change the outcome: a metrics folder gone read-only or a webhook down is one warning line.
A dry run sends nothing and tells nothing but its end line.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from bulkpatch.cli import stderr
from bulkpatch.event_loop import run_loop
from bulkpatch.http.redact import mask_urls
from bulkpatch.records.outcome import Outcome, outcome_of

if TYPE_CHECKING:
    from bulkpatch.cli.display import Progress
    from bulkpatch.cli.run_options import RunArgs
    from bulkpatch.engine.run import Run
    from bulkpatch.records.results import RunResult


class Ending:
    """What a ``run`` command keeps to tell its owner at the end: made at its start."""

    def __init__(self, args: RunArgs) -> None:
        self._args = args
        self._started = time.monotonic()
        #: the engine's run and the progress display, once they exist
        self.run: Run | None = None
        self.progress: Progress | None = None
        #: what the run did (also when it stopped early), and what to type next
        self.result: RunResult | None = None
        self.hints: list[str] = []

    def outcome(self, code: int, result: RunResult | None, error: str | None) -> Outcome:
        sender = self.run.sender if self.run is not None else None
        return outcome_of(
            result,
            exit_code=code,
            finished_at=time.time(),
            duration_s=time.monotonic() - self._started,
            answered=sender.answered if sender is not None else None,
            unanswered=sender.unanswered if sender is not None else None,
            retries=sender.retries if sender is not None else 0,
            input=self._args.input,
            ledger=self._args.ledger,
            error=None if error is None else mask_urls(error),
        )

    def finish(
        self,
        code: int,
        result: RunResult | None,
        *,
        error: str | None = None,
        prefix: str = "bulkpatch: error: ",
        hints: list[str] | None = None,
    ) -> None:
        """Tell everyone asked; the last stderr line is the end line (``error`` in text mode)."""
        args = self._args
        outcome = self.outcome(code, result, error)
        if not args.dry_run:
            if args.metrics_file is not None:
                self._write_metrics(args.metrics_file, outcome)
            if args.notify_url is not None and (args.notify_on == "always" or code != 0):
                self._notify(args.notify_url, outcome)
        progress = self.progress
        logged = progress is not None and progress.started
        if not stderr.json_lines():
            if logged and progress is not None:
                progress.log("end", {"exit_code": code})
            stderr.end(code, error, prefix=prefix)
            return
        fields = {}
        if logged and progress is not None:
            fields = {k: v for k, v in progress.record("end").items() if k not in ("ts", "event")}
        stderr.end(code, error, fields={**fields, **outcome.as_dict(), "hints": hints or []})

    def _write_metrics(self, path: str, outcome: Outcome) -> None:
        from bulkpatch.records.metrics import write_metrics

        try:
            write_metrics(path, outcome)
        except OSError as exc:
            stderr.warning(f"cannot write --metrics-file {path}: {exc.strerror or exc}")

    def _notify(self, url: str, outcome: Outcome) -> None:
        from bulkpatch.http.notify import host_of, post_summary

        try:
            problem = run_loop(post_summary(url, webhook_payload(outcome, host=socket.gethostname())))
        except Exception as exc:  # a courtesy: whatever went wrong, the run's outcome stands
            problem = f"notifying {host_of(url)} failed: {type(exc).__name__}"
        if problem is not None:
            stderr.warning(f"{problem} (the run's outcome stands)")


def _verdict(outcome: Outcome) -> str:
    """How the run ended, in words."""
    if outcome.interrupted or outcome.exit_code == 130:
        return "interrupted"
    if not outcome.began:
        return "refused before sending anything"
    if outcome.error is not None:
        return "stopped early"
    return "every row done" if outcome.exit_code == 0 else "finished with rows to fix"


def summary_text(outcome: Outcome, *, host: str = "") -> str:
    """A few lines a person reads in a chat channel: what ran where, how it ended, what to look at.

    URLs in it lose their credentials and query (``mask_urls``); secrets were masked before.
    """
    where = f" on {host}" if host else ""
    lines = [
        f"bulkpatch run{where} of {outcome.input or '-'}: {_verdict(outcome)} (exit {outcome.exit_code})"
    ]
    if outcome.began:
        counts = ", ".join(f"{status} {n:,}" for status, n in outcome.rows.items() if n)
        lines.append(
            f"rows: {counts or 'none'}; {outcome.requests:,} requests, {outcome.retries:,} retries,"
            f" {outcome.duration_s:,.1f} s"
        )
    if outcome.error is not None:
        lines.append(f"error: {outcome.error}")
    for kind, n in outcome.top_errors:
        lines.append(f"{n:,} rows: {kind}")
    if outcome.ledger:
        lines.append(f"ledger: {outcome.ledger}")
    return mask_urls("\n".join(lines))


def webhook_payload(outcome: Outcome, *, host: str = "") -> dict[str, Any]:
    """The JSON a ``--notify`` webhook receives: ``text`` for chat tools, then the figures."""
    return {"text": summary_text(outcome, host=host), **outcome.as_dict(), "host": host or None}
