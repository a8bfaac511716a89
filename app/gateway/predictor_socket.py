"""The gateway's way to the predictor replicas on its own node: their Unix sockets.

Each predictor replica listens on a socket in its node's directory
(:mod:`model.socket_server`, :func:`model.common.wire.socket_directory`). This gateway
scans that directory every ``scan_s``, keeps one connection per socket, and sends each
batch down the connection with the fewest calls waiting; several calls share a
connection (each frame carries its call id). With no socket connected (a replica on
another node, a replica still loading, the setting off) a batch goes through the
deployment handle as before, so the handle stays the way to every replica and the socket
is a shortcut to the ones next door.

A connection that breaks fails the calls waiting on it with ``ConnectionError``; the
batcher's delivery retries such a call once (:mod:`app.gateway.delivery`), and the retry
takes another socket or the handle. A replica that stops says goodbye on each
connection first (:mod:`model.socket_server`): from then on, and from when its file is
gone, the connection takes no new calls; it stays open until the replica has answered
what it read and closes it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import structlog

from app.gateway.delivery import Dispatch
from model.common.protocol import BatchResult, PredictBatch, PredictError
from model.common.tasks import cancel_and_wait, run_every
from model.common.wire import GOODBYE_ID, Frames, WireError, decode_answer, encode_call

log = structlog.get_logger("app.gateway.predictor_socket")

RETRY_REFUSED_S = 10.0  # a socket file nobody answers (a replica killed) is tried again after


class _Connection(asyncio.Protocol):
    """One predictor socket: calls out, answers in. An answer is handed to its call in
    the read's own callback (no reader task to wake: one turn of this loop less)."""

    def __init__(self, path: Path, on_closed: Callable[[_Connection], None]) -> None:
        self.path = path
        self._transport: asyncio.Transport | None = None
        self._frames = Frames()
        self._pending: dict[int, asyncio.Future[BatchResult | PredictError]] = {}
        self._ids = itertools.count()
        self._on_closed = on_closed
        self.open = True
        self.draining = False  # its file is gone: no new calls

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an asyncio.Transport subclass on uvloop (the replicas' loop): a duck.
        self._transport = cast(asyncio.Transport, transport)

    async def call(self, batch: PredictBatch) -> BatchResult | PredictError:
        if not self.open or self._transport is None:
            raise ConnectionError(f"socket {self.path.name} is closed")
        call_id = next(self._ids)
        future: asyncio.Future[BatchResult | PredictError] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[call_id] = future
        try:
            self._transport.write(encode_call(call_id, batch))
            return await future
        finally:
            self._pending.pop(call_id, None)

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self._frames.feed(data):
                call_id, answer = decode_answer(payload)
                if call_id == GOODBYE_ID:
                    self.draining = True
                    continue
                future = self._pending.get(call_id)
                if future is not None and not future.done():
                    future.set_result(answer)
        except WireError as exc:
            log.warning("predictor_socket_bad_answer", socket=self.path.name, error=str(exc))
            self._close(str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self._close("closed by the replica" if exc is None else type(exc).__name__)

    def _close(self, reason: str) -> None:
        if not self.open:
            return
        self.open = False
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"socket {self.path.name}: {reason}"))
        if self._transport is not None:
            self._transport.close()
        self._on_closed(self)

    def close(self) -> None:
        self._close("closed by the gateway")


class PredictorSockets:
    """A :data:`Dispatch` that prefers the predictor sockets of this node over ``fallback``
    (the deployment handle)."""

    def __init__(
        self,
        directory: Path | None,
        fallback: Dispatch,
        *,
        scan_s: float = 1.0,
        connect_timeout_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self._fallback = fallback
        self.scan_s = scan_s
        self.connect_timeout_s = connect_timeout_s
        self._clock = clock
        self._connections: dict[Path, _Connection] = {}
        self._refused: dict[Path, float] = {}  # path -> when connecting last failed
        self._task: asyncio.Task[None] | None = None
        self.calls = {"socket": 0, "handle": 0}
        # Told of every call with its way (the gateway's predictor_calls_total counter).
        self.on_call: Callable[[str], None] = lambda _transport: None
        self.broken = 0  # connections that closed with calls or under use

    # -- hot path ----------------------------------------------------------------------

    async def dispatch(self, batch: PredictBatch) -> BatchResult | PredictError:
        best: _Connection | None = None
        for conn in self._connections.values():
            if conn.open and not conn.draining and (best is None or conn.waiting < best.waiting):
                best = conn
        transport = "handle" if best is None else "socket"
        if not batch.warm:  # keep-warm calls are not traffic
            self.calls[transport] += 1
            self.on_call(transport)
        if best is None:
            return await self._fallback(batch)
        return await best.call(batch)

    # -- background --------------------------------------------------------------------

    def start(self) -> None:
        if self.directory is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                run_every(self.scan_s, self.scan, log=log, event="predictor_socket_scan_failed"),
                name="predictor-socket-scan",
            )

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        for conn in list(self._connections.values()):
            conn.close()
        self._connections.clear()

    async def scan(self) -> None:
        """Connect to new sockets; stop sending to those whose file is gone."""
        if self.directory is None:
            return
        try:
            present = set(self.directory.glob("*.sock"))
        except OSError:
            present = set()
        for path, conn in self._connections.items():
            if path not in present and not conn.draining:
                conn.draining = True
                log.info("predictor_socket_draining", socket=path.name)
        # Files gone for good are forgotten (a killed replica's stays until its node's
        # directory goes; a replica id never comes back).
        self._refused = {p: t for p, t in self._refused.items() if p in present}
        now = self._clock()
        for path in sorted(present - self._connections.keys()):
            refused_at = self._refused.get(path)
            if refused_at is not None and now - refused_at < RETRY_REFUSED_S:
                continue
            await self._connect(path)

    async def _connect(self, path: Path) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await asyncio.get_running_loop().create_unix_connection(
                    lambda: _Connection(path, self._forget), str(path)
                )
        except (OSError, TimeoutError) as exc:
            if path not in self._refused:  # one line per file, not one per retry
                log.info("predictor_socket_refused", socket=path.name, error=type(exc).__name__)
            self._refused[path] = self._clock()
            return
        self._refused.pop(path, None)
        if conn.open:  # not already closed by the replica
            self._connections[path] = conn
            log.info("predictor_socket_connected", socket=path.name)

    def _forget(self, conn: _Connection) -> None:
        if self._connections.get(conn.path) is conn:
            del self._connections[conn.path]
        if not conn.draining:
            self.broken += 1
            # Not again at once: a replica that closed on us may be stopping or dying.
            self._refused[conn.path] = self._clock()
        log.info("predictor_socket_closed", socket=conn.path.name, draining=conn.draining)

    def view(self) -> dict[str, Any]:
        """For ``/stats``: which sockets this gateway uses and how its calls went."""
        return {
            "directory": str(self.directory) if self.directory is not None else None,
            "connected": sorted(
                p.name for p, c in self._connections.items() if c.open and not c.draining
            ),
            "calls": dict(self.calls),
            "broken_connections": self.broken,
        }
