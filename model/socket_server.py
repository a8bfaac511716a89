"""The predictor replica's same-node socket: handle calls without Ray's transport.

A deployment-handle call costs the predictor ~4 ms of CPU outside the forward (Ray's core
worker, its gRPC threads and some fourteen thread hand-offs per call, BENCHMARKS.md,
session 7), which on a two-core box is what keeps the Serve stack behind a one-process
server. A gateway replica on the same node can instead write the same
:class:`PredictBatch` to this Unix socket (:mod:`model.common.wire` frames) and read the
same answer back; the call goes through the replica's own ``predict`` (the same
``@serve.batch`` merging, readiness check, fault injection and batch log line), so the two
ways in differ only in transport.

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

from model.common.protocol import BatchResult, PredictBatch, PredictError, as_predict_error
from model.common.wire import (
    PREFIX_BYTES,
    WireError,
    decode_call,
    encode_answer,
    encode_goodbye,
    frame_length,
)

log = logging.getLogger("model.socket_server")

Answer = Callable[[PredictBatch], Awaitable[BatchResult | PredictError]]

# After the goodbye, how long no new call must arrive before the connections close: a
# gateway whose loop is busy may still send a call it queued before reading the goodbye.
QUIET_S = 0.2


class SocketServer:
    def __init__(self, path: Path, answer: Answer) -> None:
        self.path = path
        self._answer = answer
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
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
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o600)
        log.info("socket_listening", extra={"path": str(self.path)})

    async def stop(self, drain_s: float = 5.0) -> None:
        """No new connections, a goodbye to every gateway, answer what was read (up to
        ``drain_s``), close."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            if not writer.is_closing():
                writer.write(encode_goodbye())
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
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                prefix = await reader.readexactly(PREFIX_BYTES)
                payload = await reader.readexactly(frame_length(prefix))
                call_id, batch = decode_call(payload)
                task = asyncio.get_running_loop().create_task(self._one(call_id, batch, writer))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the gateway went away (or is stopping): its calls are its to retry
        except WireError as exc:
            self.dropped += 1
            log.warning("socket_frame_refused", extra={"error": str(exc)})
        finally:
            self._writers.discard(writer)
            # Answers still being computed for this connection are dropped with it.
            writer.close()

    async def _one(self, call_id: int, batch: PredictBatch, writer: asyncio.StreamWriter) -> None:
        try:
            answer = await self._answer(batch)
        except Exception as exc:  # the handle path returns these typed too
            answer = as_predict_error(exc)
        self.calls += 1
        if not writer.is_closing():
            writer.write(encode_answer(call_id, answer))
