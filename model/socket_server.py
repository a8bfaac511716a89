"""The predictor replica's same-node socket: handle calls without Ray's transport.

A deployment-handle call costs the predictor ~4 ms of CPU outside the forward (Ray's core
worker, its gRPC threads and some fourteen thread hand-offs per call, BENCHMARKS.md,
session 7), which on a two-core box is what keeps the Serve stack behind a one-process
server. A gateway replica on the same node can instead write the same
:class:`PredictBatch` to this Unix socket (:mod:`model.common.wire` frames) and read the
same answer back; the call goes through the replica's own ``predict`` (the same
``@serve.batch`` merging, readiness check, fault injection and batch log line), so the two
ways in differ only in transport. A call the replica can answer on the spot (a lone call
on an idle replica, ``PredictorDeployment.answer_now``) is answered in the callback that
read it; the others go to ``predict`` on a task of their own.

Serve stays in charge of the replica: it starts the socket once the model is loaded and
warm, and its ``__del__`` (Serve calls it after draining the handle calls) stops it:
the file goes first, so no gateway connects again; every connected gateway gets a
goodbye frame and sends nothing more; the calls read until then are answered (and the
connection kept a moment longer for calls that crossed the goodbye on the wire); then
the connections close. A call a gateway sent that the replica never read fails on that
gateway, which retries it through the handle (:mod:`app.gateway.delivery`).

The socket's directory is the node's and the application's (:func:`socket_directory`),
mode 0700, so only processes of the same user on the same node can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

from model.common.protocol import BatchResult, PredictBatch, PredictError, as_predict_error
from model.common.wire import Frames, WireError, decode_call, encode_answer, encode_goodbye

log = logging.getLogger("model.socket_server")

Answer = Callable[[PredictBatch], Awaitable[BatchResult | PredictError]]
# The answer to a call there and then, or None when the call has to wait (for the batch
# queue): a lone call on an idle replica is answered in the read's own callback, with no
# reader to wake and no task to start (two turns of the replica's loop; with the gateway's
# reader, 0.07-0.09 ms of a lone request at 1 req/s, BENCHMARKS.md session 26).
AnswerNow = Callable[[PredictBatch], BatchResult | PredictError | None]

# After the goodbye, how long no new call must arrive before the connections close: a
# gateway whose loop is busy may still send a call it queued before reading the goodbye.
QUIET_S = 0.2


class SocketServer:
    def __init__(self, path: Path, answer: Answer, answer_now: AnswerNow | None = None) -> None:
        self.path = path
        self._answer = answer
        self._answer_now = answer_now
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._calls: set[asyncio.Task[None]] = set()
        self.calls = 0  # calls answered so far
        self.dropped = 0  # connections dropped for a frame that did not decode

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a replica of the same id that died without cleaning up
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self), path=str(self.path))
        os.chmod(self.path, 0o600)
        log.info("socket_listening", extra={"path": str(self.path)})

    async def stop(self, drain_s: float = 5.0) -> None:
        """No new connections, a goodbye to every gateway, answer what was read (up to
        ``drain_s``), close."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._server is not None:
            self._server.close()
        for conn in self._connections:
            conn.send(encode_goodbye())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_s
        while (left := deadline - loop.time()) > 0:
            if self._calls:
                await asyncio.wait(set(self._calls), timeout=left)
                continue
            seen = self.calls
            await asyncio.sleep(min(QUIET_S, left))
            if not self._calls and self.calls == seen:
                break
        for conn in list(self._connections):
            conn.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
            self._server = None

    def _take(self, conn: _Connection, call_id: int, batch: PredictBatch) -> None:
        """A call just read: answered now where the replica can, else by a task."""
        if self._answer_now is not None:
            try:
                answer = self._answer_now(batch)
            except Exception as exc:  # the handle path returns these typed too
                answer = as_predict_error(exc)
            if answer is not None:
                self._reply(conn, call_id, answer)
                return
        task = asyncio.get_running_loop().create_task(self._one(conn, call_id, batch))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _one(self, conn: _Connection, call_id: int, batch: PredictBatch) -> None:
        try:
            answer = await self._answer(batch)
        except Exception as exc:  # the handle path returns these typed too
            answer = as_predict_error(exc)
        self._reply(conn, call_id, answer)

    def _reply(self, conn: _Connection, call_id: int, answer: BatchResult | PredictError) -> None:
        self.calls += 1
        # Answers for a connection that went away are dropped with it: its calls are its
        # gateway's to retry.
        conn.send(encode_answer(call_id, answer))


class _Connection(asyncio.Protocol):
    """One gateway's connection: calls in, answers out (in any order, by call id)."""

    def __init__(self, server: SocketServer) -> None:
        self._server = server
        self._frames = Frames()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an asyncio.Transport subclass on uvloop (the replicas' loop): a duck.
        self._transport = cast(asyncio.Transport, transport)
        self._server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self._frames.feed(data):
                if self._transport is None or self._transport.is_closing():
                    return
                call_id, batch = decode_call(payload)
                self._server._take(self, call_id, batch)
        except WireError as exc:
            self._server.dropped += 1
            log.warning("socket_frame_refused", extra={"error": str(exc)})
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # The gateway went away (or is stopping); answers still being computed for it are
        # dropped with the connection.
        self._server._connections.discard(self)

    def send(self, frame: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
