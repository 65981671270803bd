"""The workers: ``concurrency`` tasks that pull requests from the intake, send them, record them.

No task per row and nothing materialized: every worker iterates the one intake generator. Rows of
one key keep their input order (``KeyOrder``): a later row waits while an earlier one is in
flight. The workers live in an ``asyncio.TaskGroup``: a worker that fails takes the others with
it, and a caller that cancels the run cancels them all.

A worker hands the ledger what was recorded before it sends its next request, so a ``kill -9``
finds each worker's last row either in flight or written down: a resume sends again at most
``concurrency`` rows.

Stopping: ``stop()`` on the token (the first SIGINT/SIGTERM/SIGHUP) ends intake; requests in
flight get ``grace`` seconds to finish, then are cancelled; a row that did not finish is left
unrecorded, so the next run sends it again. A second signal cancels at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from bulkpatch.engine.key_order import KeyOrder
from bulkpatch.engine.outage import FirstRowsGuard
from bulkpatch.engine.sender import Sender
from bulkpatch.engine.stopping import StopToken
from bulkpatch.errors import BulkPatchError
from bulkpatch.records.ledger import RowResult
from bulkpatch.rows.mapping import Request


class Workers:
    """``await drive(...)``: send everything the intake yields; ``in_flight`` for displays."""

    def __init__(
        self,
        stop: StopToken,
        fail: Callable[[BulkPatchError], None],
        emit: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self._stop = stop
        self._flush: Callable[[], None] = _nothing
        self._fail = fail
        self._emit = emit
        self._order = KeyOrder()
        self._guard = FirstRowsGuard()
        #: rows being sent right now
        self.in_flight = 0

    async def drive(
        self,
        work: Iterator[Request | None],
        more: Callable[[], Awaitable[None]],
        sender: Sender,
        record: Callable[[RowResult], None],
        *,
        concurrency: int,
        grace: float,
        handle_signals: bool = False,
        flush: Callable[[], None] | None = None,
    ) -> None:
        """Run the workers until the intake is done or the run stops (see the module docstring);
        ``flush`` hands the recorded outcomes to the ledger file."""
        self._flush = flush or _nothing
        tasks: list[asyncio.Task[None]] = []
        signals = _Signals(self._stop, tasks, self._emit, lambda: self.in_flight) if handle_signals else None
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(concurrency):
                    tasks.append(group.create_task(self._work(work, more, sender, record)))
                group.create_task(self._cancel_after_grace(tasks, grace))
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
        finally:
            if signals is not None:
                signals.remove()

    async def _cancel_after_grace(self, tasks: list[asyncio.Task[None]], grace: float) -> None:
        """Once the run stops, give requests in flight ``grace`` seconds, then cancel them."""
        waiting = asyncio.ensure_future(asyncio.wait(tasks))
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiting), grace)
            for task in tasks:
                task.cancel()
        finally:
            waiting.cancel()
            stopping.cancel()
            await asyncio.gather(waiting, stopping, return_exceptions=True)

    async def _work(
        self,
        work: Iterator[Request | None],
        more: Callable[[], Awaitable[None]],
        sender: Sender,
        record: Callable[[RowResult], None],
    ) -> None:
        send = sender.send
        flush = self._flush
        order = self._order
        guard = self._guard
        stop = self._stop
        for request in work:
            if request is None:
                await more()  # the intake passed over many rows, or waits for rows given in code
                continue
            key = request.key  # "" when the path names no field: nothing to keep in order
            turn, before = order.take(key) if key else (None, None)
            self.in_flight += 1
            try:
                if before is not None:
                    await before.wait()
                    if stop.stopped:
                        return  # the earlier row of this key has no answer: this one must wait too
                # Answers recorded reach the ledger before another request goes out: a kill -9
                # then finds each worker's row either in flight or written down, so at most
                # ``concurrency`` rows are sent again (the writer batches what came meanwhile).
                flush()
                result = await send(request)
            except BulkPatchError as exc:
                self._fail(exc)
                return
            finally:
                self.in_flight -= 1
                if turn is not None:
                    order.done(key, turn)
            if result is None:
                return  # the run stopped before this row had an answer: it stays unrecorded
            record(result)
            if guard.watching and (wrong := guard.see(result)) is not None:
                self._fail(wrong)


class _Signals:
    """SIGINT, SIGTERM, SIGHUP: the first stops the run, a second cancels the workers at once."""

    def __init__(
        self,
        stop: StopToken,
        tasks: list[asyncio.Task[None]],
        emit: Callable[[str, dict[str, Any]], None],
        in_flight: Callable[[], int],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._seen = 0
        self._stop, self._tasks, self._emit, self._in_flight = stop, tasks, emit, in_flight
        self._installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            # Not in the main thread (or not on Unix): no signal handling, and that is fine.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(sig, self._on_signal)
                self._installed.append(sig)

    def _on_signal(self) -> None:
        self._seen += 1
        if self._seen == 1:
            self._emit("stop_requested", {"in_flight": self._in_flight()})
            self._stop.stop()
        else:
            for task in self._tasks:
                task.cancel()

    def remove(self) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)


def _nothing() -> None:
    return None
