"""Carry requests out in child processes, for APIs fast enough that one CPU core is the limit.

``ProcessTransport`` is a ``Transport`` whose requests are sent by N child processes, each
running an ``AiohttpTransport`` on its own event loop, on its own core. Everything above the
transport — reading, validation, pacing, retries, tokens, the ledger — stays in the parent, so
the ledger keeps one writer and a resume works exactly as without it.

Parent and child speak length-prefixed binary frames over the child's stdin and stdout, batched
per event-loop turn (one ``write`` per turn, not per request). The first frame to a child is its
configuration (JSON; it holds the default headers, so they never appear on a command line). A
child ignores SIGINT and SIGTERM: the parent decides when to stop. A child ends when its stdin
closes — the parent closed it, or died — dropping what it still has in flight: nobody is left to
take the answers, and those rows, unrecorded, are sent again by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import struct
import sys
from collections.abc import Callable, Mapping
from typing import Any, cast

import orjson

from bulkpatch.errors import BulkPatchError, TransportError, WorkerError
from bulkpatch.event_loop import run_loop
from bulkpatch.http.transport import AiohttpTransport, Response

# frame = u32 length of what follows, then the fields below, then their bytes
_LEN = struct.Struct("<I")
# request: id, method length, url length, body length (-1: no body), headers length
_REQUEST = struct.Struct("<IBIiI")
# response: id, status (-1: transport error, -2: the worker failed), then two strings: Retry-After
# and body, or, for a transport error, its kind and message, or, for a failed worker, "" and why;
# then, only if the response had a Location header or a quota, the Location's u32 length
# (_ABSENT: none) and bytes, then only if it announced a quota, the quota headers' u32 length
# and JSON (a frame without a tail, as from an older worker, reads as neither)
_RESPONSE = struct.Struct("<IhII")
_ABSENT = 0xFFFF_FFFF
_NO_BODY = -1
_TRANSPORT_ERROR = -1
_WORKER_ERROR = -2
_STOP_GRACE = 5.0
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Frames:
    """Reassembles frames from a byte stream; calls ``handle`` with each frame's payload."""

    def __init__(self, handle: Callable[[memoryview], None]) -> None:
        self._buffer = bytearray()
        self._handle = handle

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        at = 0
        with memoryview(buffer) as view:
            while size - at >= 4:
                (length,) = _LEN.unpack_from(buffer, at)
                end = at + 4 + length
                if end > size:
                    break
                self._handle(view[at + 4 : end])
                at = end
        if at:
            del buffer[:at]


class _Outbox:
    """Frames waiting to be written, sent in one write at the end of the event-loop turn."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._frames: list[bytes] = []
        self._scheduled = False

    def put(self, frame: bytes) -> None:
        self._frames.append(frame)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._frames:
            data = b"".join(self._frames)
            self._frames.clear()
            self._write(data)


def _bytes(text: str) -> bytes:
    # Header values may hold undecodable bytes (kept as surrogates): never fail over them.
    return text.encode("utf-8", "replace")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _request_frame(rid: int, method: str, url: str, body: bytes | None, headers: bytes) -> bytes:
    m, u = method.encode(), url.encode()
    b = body if body is not None else b""
    head = _REQUEST.pack(rid, len(m), len(u), _NO_BODY if body is None else len(b), len(headers))
    return _LEN.pack(len(head) + len(m) + len(u) + len(b) + len(headers)) + head + m + u + b + headers


def _response_frame(
    rid: int, status: int, first: bytes, second: bytes, location: bytes | None = None, quota: bytes = b""
) -> bytes:
    head = _RESPONSE.pack(rid, status, len(first), len(second))
    tail = b""
    if location is not None or quota:
        tail = _LEN.pack(_ABSENT) if location is None else _LEN.pack(len(location)) + location
        if quota:
            tail += _LEN.pack(len(quota)) + quota
    return _LEN.pack(len(head) + len(first) + len(second) + len(tail)) + head + first + second + tail


class _Child(asyncio.SubprocessProtocol):
    """The parent's end of one worker process."""

    def __init__(self) -> None:
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.SubprocessTransport | None = None
        self.outbox: _Outbox | None = None
        self.error_tail = b""
        self._frames = _Frames(self._response)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement these interfaces without subclassing them
        self.transport = cast(asyncio.SubprocessTransport, transport)
        stdin = cast(asyncio.WriteTransport, self.transport.get_pipe_transport(0))
        self.outbox = _Outbox(stdin.write)

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        assert isinstance(data, bytes)
        if fd == 1:
            self._frames.feed(data)
        else:  # stderr: keep the end, to say why a child died
            self.error_tail = (self.error_tail + data)[-2000:]

    def _response(self, frame: memoryview) -> None:
        rid, status, first_len, second_len = _RESPONSE.unpack_from(frame)
        at = _RESPONSE.size
        first = bytes(frame[at : at + first_len])
        at += first_len
        second = bytes(frame[at : at + second_len])
        at += second_len
        location = quota = None
        if len(frame) > at:
            (location_len,) = _LEN.unpack_from(frame, at)
            at += 4
            if location_len != _ABSENT:
                location = _text(bytes(frame[at : at + location_len]))
                at += location_len
            if len(frame) > at:
                (quota_len,) = _LEN.unpack_from(frame, at)
                quota = orjson.loads(frame[at + 4 : at + 4 + quota_len])
        future = self.pending.pop(rid, None)
        if future is None or future.done():
            return  # the caller gave up on it (cancelled)
        if status == _WORKER_ERROR:
            future.set_exception(WorkerError(f"a worker process failed: {_text(second)}"))
        elif status == _TRANSPORT_ERROR:
            future.set_exception(TransportError(_text(first), _text(second)))
        else:
            future.set_result(Response(status, _text(first) if first else None, second, location, quota))

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
        if self.pending:
            error = WorkerError(f"a worker process ended unexpectedly{self.why()}")
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(error)
            self.pending.clear()

    def why(self) -> str:
        lines = self.error_tail.decode("utf-8", "replace").strip().splitlines()
        return f": {lines[-1]}" if lines else ""


class ProcessTransport:
    """A ``Transport`` that sends each request through one of ``processes`` worker processes.

    ``limit`` (open connections) and ``timeout`` are as for ``AiohttpTransport`` and shared out
    among the workers; a request goes to the worker with the fewest requests in flight.
    """

    def __init__(
        self,
        *,
        processes: int,
        limit: int,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self._processes = processes
        self._config = {
            "limit": -(-limit // processes) + 2,  # ceil(limit / processes), and room for a token request
            "timeout": timeout,
            "headers": dict(headers or {}),
        }
        self._children: list[_Child] = []
        self._started: asyncio.Future[None] | None = None
        self._ids = itertools.count(1)
        self._closed = False

    async def start(self) -> None:
        """Start the worker processes (``send`` does it too, if needed)."""
        if self._closed:
            raise WorkerError("the worker processes are closed")
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        config = orjson.dumps(self._config)
        # The workers import this very copy of bulkpatch, wherever it was imported from.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        for _ in range(self._processes):
            try:
                _, child = await loop.subprocess_exec(
                    _Child,
                    sys.executable,
                    "-m",
                    __name__,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=env,
                )
            except OSError as exc:
                raise WorkerError(f"cannot start a worker process: {exc.strerror}") from None
            assert child.outbox is not None
            child.outbox.put(_LEN.pack(len(config)) + config)
            self._children.append(child)

    async def send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        if not self._children:
            await self.start()
        child = min(self._children, key=_load)
        if child.exited.done():
            raise WorkerError(f"a worker process ended unexpectedly{child.why()}")
        rid = next(self._ids) & 0xFFFF_FFFF  # a u32 on the wire; wraps after 4 billion requests
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        child.pending[rid] = future
        assert child.outbox is not None
        child.outbox.put(_request_frame(rid, method, url, body, orjson.dumps(headers) if headers else b""))
        try:
            return await future
        except asyncio.CancelledError:
            child.pending.pop(rid, None)
            raise

    async def __aenter__(self) -> ProcessTransport:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the workers' stdin (they drop what they still hold, and exit); wait for them,
        and kill one that has not exited within a few seconds."""
        self._closed = True
        if self._started is not None and not self._started.done():
            self._started.cancel()
            with contextlib.suppress(asyncio.CancelledError, BulkPatchError):
                await self._started
        children, self._children = self._children, []
        for child in children:
            assert child.transport is not None
            assert child.outbox is not None
            child.outbox.flush()
            stdin = child.transport.get_pipe_transport(0)
            if stdin is not None:
                stdin.close()
        for child in children:
            assert child.transport is not None
            try:
                await asyncio.wait_for(asyncio.shield(child.exited), _STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.transport.kill()
                await child.exited
            child.transport.close()


def _load(child: _Child) -> int:
    return len(child.pending)


# --- the worker process -----------------------------------------------------------------------


class _Worker(asyncio.Protocol):
    """A worker's end: requests in on stdin, responses out on stdout."""

    def __init__(self, out: _Outbox) -> None:
        self._out = out
        self._transport: AiohttpTransport | None = None
        self._frames = _Frames(self._frame)
        self._tasks: set[asyncio.Task[None]] = set()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._frames.feed(data)

    def eof_received(self) -> bool:
        self._end()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def _frame(self, frame: memoryview) -> None:
        if self._transport is None:
            config: dict[str, Any] = orjson.loads(frame)
            self._transport = AiohttpTransport(
                limit=config["limit"], timeout=config["timeout"], headers=config["headers"]
            )
            return
        rid, method_len, url_len, body_len, headers_len = _REQUEST.unpack_from(frame)
        at = _REQUEST.size
        method = str(frame[at : at + method_len], "ascii")
        at += method_len
        url = str(frame[at : at + url_len], "utf-8")
        at += url_len
        body = None
        if body_len != _NO_BODY:
            body = bytes(frame[at : at + body_len])
            at += body_len
        headers = orjson.loads(frame[at : at + headers_len]) if headers_len else None
        task = asyncio.get_running_loop().create_task(self._send(rid, method, url, body, headers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, rid: int, method: str, url: str, body: bytes | None, headers: dict[str, str] | None
    ) -> None:
        assert self._transport is not None
        try:
            response = await self._transport.send(method, url, body, headers)
        except TransportError as exc:
            self._out.put(_response_frame(rid, _TRANSPORT_ERROR, _bytes(exc.kind), _bytes(str(exc))))
            return
        except Exception as exc:  # a bug, not the network: the parent must not wait forever
            message = f"{type(exc).__name__}: {exc}"
            self._out.put(_response_frame(rid, _WORKER_ERROR, b"", _bytes(message)))
            return
        retry_after = _bytes(response.retry_after or "")
        location = None if response.location is None else _bytes(response.location)
        quota = orjson.dumps(response.quota) if response.quota else b""
        self._out.put(_response_frame(rid, response.status, retry_after, response.body, location, quota))

    async def finish(self) -> None:
        """Stdin closed: nobody waits for the answers any more. Drop what is in flight, leave."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            await self._transport.close()


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    stdout, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(1, "wb", buffering=0))
    worker = _Worker(_Outbox(stdout.write))
    await loop.connect_read_pipe(lambda: worker, os.fdopen(0, "rb", buffering=0))
    await worker.done
    await worker.finish()
    stdout.close()


def _main() -> None:
    # Ctrl-C reaches the whole process group: the parent decides when to stop; a worker ends when
    # its stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    run_loop(_serve())


if __name__ == "__main__":
    _main()
