"""One sender process of the default generator: raw keep-alive sockets, no event loop.

``python -m app.bench.sender --bodies FILE`` reads its plan (one JSON line) on stdin,
opens its connections, prints ``ready``, reads the start time (a ``time.monotonic()``
value, the same clock in every process on the machine) and sends its share of the
global schedule (:mod:`app.bench.schedule`). The result is one JSON line on stdout.

The loop is a bare ``selectors`` loop over non-blocking sockets: each wake-up either
sends what is due or reads what arrived, requests are pre-encoded bytes, responses are
parsed only as far as status, length and the expected marker. A request due while every
connection waits for a reply goes out on the first connection free: one that answers or
a new one (up to ``max_connections``), opened on a thread so that a server slow to finish
a handshake holds up no send; a sender never waits for a reply before a scheduled send,
and never blocks its loop on the server. Sender processes run at niceness -5 where allowed
(:func:`take_niceness`). Latency counts from the due
time; ``lag`` is how late the loop itself got to a due request (the generator's own
delay, reported apart).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import queue
import resource
import selectors
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from app.bench.http1 import encode_requests, ended_by_close, parse_response
from app.bench.schedule import offsets, share

_READ = selectors.EVENT_READ
_RW = selectors.EVENT_READ | selectors.EVENT_WRITE
# A connection idle this long is closed, not reused (``--idle-reuse-s``). A server closes
# idle keep-alive connections on its own timer, and a request written as that timer fires
# dies with the connection: a "ServerDisconnectedError" that is the race's, not the
# server's (session 19, against uvicorn's default 5 s). The bound sits under the timers
# of every server the bench runs (KEEP_ALIVE_S, 90 s, as Serve's gateway) and of common
# balancers (60 s), and above a run's length. It was 4 s until session 30: the senders
# reuse their warmest connection first, so at a few thousand requests a second most of
# the 64 sat idle, were closed after 4 s, and the next hiccup opened hundreds of new ones.
# Their TLS handshakes stalled the server's loop, which opened more: the hello at 4000
# req/s stalled for 70-170 ms every ~5 s (1852-2680 connections opened, p99 115-132 ms)
# where with the connections kept it opened 64 (p99 0.8 ms).
IDLE_REUSE_S = 50.0
# A sender with nothing in flight and a long wait ahead sleeps until ``spin_s`` before the
# due time and spins on the clock for the rest (:func:`wait_until`). A timer on this
# box's VMs fires 0.1-0.8 ms late (the vCPU halts while idle and the host wakes it late),
# and at 1 req/s the sends went out 0.16-0.40 ms late at p50, counted as server latency
# (session 29). Only waits of ``SPIN_FROM_S`` or more spin, so the spin costs at most
# spin_s / SPIN_FROM_S of a core (2% at the default) and nothing at the rates where the
# generator's CPU competes with the server's.
SPIN_S = 0.002
SPIN_FROM_S = 0.1


def take_niceness(nice: int) -> int:
    """Run this process at ``nice`` where allowed (raising priority needs CAP_SYS_NICE);
    returns the niceness it runs at.

    The senders share the box's cores with the servers they measure, and a sender the
    scheduler keeps waiting sends late: the lateness counts as latency (from the due
    time), and a step where it grows is failed as "the generator fell behind" whatever
    the server did. Ahead of the servers, the senders take the same CPU, at the moments
    their schedule needs it; a server kept waiting instead shows it as its own latency,
    which is what the run measures."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    return os.getpriority(os.PRIO_PROCESS, 0)


def wait_until(due: float, spin_s: float, poll: Callable[[], object] | None = None) -> None:
    """Return at ``due`` (``time.monotonic()``), not before: sleep on the precise timer
    until ``spin_s`` ahead of it, then spin on the clock, calling ``poll`` on each turn.
    ``spin_s`` 0: sleep only.

    ``poll`` is the sender's ``select(0)``: on this box's VMs the first system call after
    a spin in user space alone took 85-600 us (session 29), and that call would be the
    send's; a spin that polls keeps the kernel's path warm (~1 us a call)."""
    ahead = due - time.monotonic() - spin_s
    if ahead > 0.0:
        time.sleep(ahead)
    while time.monotonic() < due:
        if poll is not None:
            poll()


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Conn:
    __slots__ = ("buf", "idle_since", "out", "pos", "sent_at", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.out: memoryview | None = None
        self.pos = -1  # local index of the request in flight, -1 when idle
        self.sent_at = 0.0
        self.idle_since = time.monotonic()


_RECV = 65536


class Sender:
    """The state of one sender's run; :meth:`run` is the loop."""

    def __init__(self, plan: dict[str, Any], requests: list[bytes]) -> None:
        url = urlsplit(plan["base_url"])
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ctx: ssl.SSLContext | None = None
        if url.scheme == "https":
            ca = plan.get("ca_file")
            self.ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
        self.requests = requests
        self.timeout_s = float(plan["timeout_s"])
        self.expect = str(plan.get("expect") or "").encode()
        self.max_conns = max(1, int(plan["max_connections"]))
        self.idle_reuse_s = float(plan.get("idle_reuse_s", IDLE_REUSE_S))
        self.spin_s = max(0.0, float(plan.get("spin_ms", SPIN_S * 1000.0)) / 1000.0)
        n, n_warm = int(plan["n"]), int(plan["n_warm"])
        self.mine = share(n, int(plan["sender"]), int(plan["senders"]))
        all_offsets = offsets(float(plan["rate"]), n, plan["arrivals"], int(plan["seed"]))
        self.offs = [all_offsets[k] for k in self.mine]
        m = len(self.mine)
        self.first_measured = next((j for j, k in enumerate(self.mine) if k >= n_warm), m)
        self.due: list[float] = []
        self.lag = [0.0] * m
        self.latency = [-1.0] * m
        self.done_at = [0.0] * m
        self.outcome: list[int | str] = ["incomplete"] * m
        self.sel = selectors.DefaultSelector()
        self.conns: set[_Conn] = set()
        self.idle: list[_Conn] = []  # a stack: the warmest connection is reused first
        self.waiting: deque[int] = deque()
        self.opened = 0
        self.rbuf = memoryview(bytearray(_RECV))
        self.session: ssl.SSLSession | None = None
        self.open_error: str | None = None
        # Connections opened during the run are opened off the loop (_open_later): the
        # connect and TLS handshake wait for the server, and a busy server's answer can
        # take tens of ms, during which no send of this sender would go out.
        self.opening = 0
        self.opened_q: queue.SimpleQueue[socket.socket | str] = queue.SimpleQueue()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.sel.register(self.wake_r, _READ, None)
        for _ in range(max(1, min(int(plan["connections"]), self.max_conns))):
            try:
                self.idle.append(self._open())
            except OSError as exc:  # counted per request when the run tries again
                self.open_error = type(exc).__name__
                break

    def _connect(self) -> socket.socket:
        """A new connection, blocking until it is ready (TCP, then TLS)."""
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ctx is not None:
            # Resume the TLS session of an earlier connection: no certificate check again.
            sock = self.ctx.wrap_socket(sock, server_hostname=self.host, session=self.session)
        return sock

    def _open(self) -> _Conn:
        return self._adopt(self._connect())

    def _open_later(self) -> None:
        """Open a connection on a thread of its own; the loop adopts it when it is ready
        (:meth:`_take_opened`). A daemon thread: one still waiting on a server when the
        run ends does not hold the process."""
        self.opening += 1
        threading.Thread(target=self._connect_for_loop, daemon=True).start()

    def _connect_for_loop(self) -> None:
        try:
            result: socket.socket | str = self._connect()
        except OSError as exc:
            result = type(exc).__name__
        self.opened_q.put(result)
        with contextlib.suppress(OSError):
            self.wake_w.send(b"\0")

    def _take_opened(self) -> None:
        """Adopt the connections opened since the last look, each for the oldest request
        waiting; a connection that failed is that request's outcome."""
        with contextlib.suppress(BlockingIOError):
            self.wake_r.recv(4096)
        while True:
            try:
                result = self.opened_q.get_nowait()
            except queue.Empty:
                return
            self.opening -= 1
            if isinstance(result, str):
                if self.waiting:
                    self._record(self.waiting.popleft(), result)
                continue
            conn = self._adopt(result)
            if self.waiting:
                self._dispatch_on(conn, self.waiting.popleft())
            else:
                self.idle.append(conn)

    def _adopt(self, sock: socket.socket) -> _Conn:
        sock.setblocking(False)
        conn = _Conn(sock)
        self.sel.register(sock, _READ, conn)
        self.conns.add(conn)
        self.opened += 1
        return conn

    def _drop(self, conn: _Conn, why: str | None) -> None:
        if conn.pos >= 0 and why is not None:
            self._record(conn.pos, why)
        conn.pos = -1
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        self.sel.unregister(conn.sock)
        conn.sock.close()

    def _record(self, pos: int, outcome: int | str) -> None:
        end = time.monotonic()
        self.latency[pos] = end - self.due[pos]
        self.done_at[pos] = end
        self.outcome[pos] = outcome

    def _idle_conn(self) -> _Conn | None:
        """The warmest idle connection, closing those idle for the reuse bound
        (:data:`IDLE_REUSE_S` by default) or more on the way (the stack's deeper ones
        have been idle longer still)."""
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if now - conn.idle_since < self.idle_reuse_s:
                return conn
            self._drop(conn, None)
        return None

    def _dispatch(self, pos: int, *, front: bool = False) -> None:
        conn = self._idle_conn()
        if conn is None:  # the wait for a free connection counts as latency
            # At most one connection opening for each request waiting (this one included).
            if (
                self.opening <= len(self.waiting)
                and len(self.conns) + self.opening < self.max_conns
            ):
                self._open_later()
            if front:
                self.waiting.appendleft(pos)
            else:
                self.waiting.append(pos)
            return
        conn.pos = pos
        conn.sent_at = time.monotonic()
        conn.out = memoryview(self.requests[self.mine[pos] % len(self.requests)])
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        assert conn.out is not None
        try:
            sent = conn.sock.send(conn.out)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            sent = 0
        except OSError as exc:
            self._drop(conn, type(exc).__name__)
            return
        conn.out = conn.out[sent:] if sent < len(conn.out) else None
        self.sel.modify(conn.sock, _READ if conn.out is None else _RW, conn)

    def _read(self, conn: _Conn) -> None:
        sock, rbuf = conn.sock, self.rbuf
        try:
            got = sock.recv_into(rbuf)
            if not got:
                self._eof(conn)
                return
            conn.buf += rbuf[:got]
            while isinstance(sock, ssl.SSLSocket) and sock.pending():
                got = sock.recv_into(rbuf)
                conn.buf += rbuf[:got]
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            if not conn.buf:
                return
        except OSError as exc:
            self._drop(conn, type(exc).__name__)
            return
        if conn.pos < 0:
            self._drop(conn, None)  # bytes nobody asked for: not a connection to reuse
            return
        parsed = parse_response(conn.buf)
        if parsed is None:
            return
        status, body, used, close = parsed
        del conn.buf[:used]
        ok = 200 <= status < 300
        self._record(conn.pos, "bad_body" if ok and self.expect not in body else status)
        conn.pos = -1
        conn.idle_since = time.monotonic()
        if self.ctx is not None and (self.session is None or not self.session.has_ticket):
            self.session = conn.sock.session  # type: ignore[attr-defined]
        if close:
            self._drop(conn, None)
        elif self.waiting:
            self._dispatch_on(conn, self.waiting.popleft())
        else:
            self.idle.append(conn)

    def _dispatch_on(self, conn: _Conn, pos: int) -> None:
        self.idle.append(conn)
        self._dispatch(pos)

    def _eof(self, conn: _Conn) -> None:
        # A response without a length ends with the connection; one cut short of its
        # length is the disconnect's (an answer whose marker came before the cut was
        # counted as a success).
        whole = ended_by_close(conn.buf) if conn.pos >= 0 else None
        if whole is not None:
            status, body = whole
            ok = 200 <= status < 300
            self._record(conn.pos, "bad_body" if ok and self.expect not in body else status)
            conn.pos = -1
        self._drop(conn, "ServerDisconnectedError")
        if self.waiting and len(self.conns) < self.max_conns:
            self._dispatch(self.waiting.popleft(), front=True)

    def _poll(self) -> None:
        """A look at the sockets that handles nothing: what is ready stays ready for the
        loop's next ``select`` (level-triggered)."""
        self.sel.select(0)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self.conns if c.pos >= 0 and now - c.sent_at > self.timeout_s]:
            self._drop(conn, "timeout")
        while self.waiting and now - self.due[self.waiting[0]] > self.timeout_s:
            self._record(self.waiting.popleft(), "timeout")

    def run(self, t0: float) -> dict[str, Any]:
        self.due = [t0 + o for o in self.offs]
        due, m = self.due, len(self.due)
        nxt, cpu_first, t_first, t_last = 0, cpu_s(), t0, t0
        end_by = (due[-1] if m else t0) + self.timeout_s + 5.0
        next_expiry = t0 + 0.05
        wait = max(0.0, t0 - time.monotonic())
        while True:
            # Replies first: after a late wake-up they free connections for the sends.
            for key, mask in self.sel.select(wait):
                if key.data is None:  # a connection opened off the loop is ready
                    self._take_opened()
                    continue
                conn: _Conn = key.data
                if mask & selectors.EVENT_WRITE and conn.out is not None:
                    self._write(conn)
                if mask & selectors.EVENT_READ and conn in self.conns:
                    self._read(conn)
            now = time.monotonic()
            if self.waiting and len(self.conns) < self.max_conns:
                self._dispatch(self.waiting.popleft(), front=True)
            while nxt < m and due[nxt] <= now:
                if nxt == self.first_measured:
                    cpu_first, t_first = cpu_s(), now
                t_last = time.monotonic()
                self.lag[nxt] = t_last - due[nxt]
                self._dispatch(nxt)
                nxt += 1
            busy = self.waiting or any(c.pos >= 0 for c in self.conns)
            if nxt >= m and (not busy or now > end_by):
                break
            if busy and now >= next_expiry:
                self._expire(now)
                next_expiry = now + 0.05
            wait = max(0.0, due[nxt] - now) if nxt < m else 0.05
            if not busy and nxt < m and wait > 0.0:
                # Nothing in flight, so no reply to watch for: sleep on the precise timer.
                # epoll_wait rounds its timeout up to the millisecond and the kernel lets
                # it fire up to 0.1% late (1 ms on a 1 s gap): at 1 req/s the sends went
                # out 2.8 ms late at p50, and that lag counts as latency (session 14).
                # A long wait ends in a spin (SPIN_S): the timer itself fires late here.
                wait_until(due[nxt], self.spin_s if wait >= SPIN_FROM_S else 0.0, self._poll)
                wait = 0.0
        t_end = time.monotonic()
        cpu_window = cpu_s() - cpu_first
        for conn in list(self.conns):
            self._drop(conn, None)
        while not self.opened_q.empty():  # opened after the last look
            late = self.opened_q.get_nowait()
            if not isinstance(late, str):
                late.close()
        self.sel.unregister(self.wake_r)
        self.wake_r.close()
        self.wake_w.close()
        measured = max(0, m - self.first_measured)
        return {
            "lag": [round(x, 7) for x in self.lag],
            "latency": [round(x, 7) for x in self.latency],
            "done_at": [round(x, 7) for x in self.done_at],
            "outcome": self.outcome,
            "sent": m,
            "measured_sent": measured,
            "cpu_s": round(cpu_window, 6),
            "cpu_total_s": round(cpu_s(), 6),
            "window_start": t_first,
            "last_send": t_last,
            "end": t_end,
            "connections_opened": self.opened,
            "open_error": self.open_error,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", required=True, help="one request body per line")
    args = parser.parse_args(argv)
    plan = json.loads(sys.stdin.readline())
    with open(args.bodies, "rb") as f:
        bodies = [line for line in f.read().split(b"\n") if line]
    host = urlsplit(plan["base_url"]).netloc
    requests = encode_requests(host, plan["path"], bodies, plan.get("api_key"))
    nice = take_niceness(int(plan.get("nice", 0)))
    sender = Sender(plan, requests)
    gc.collect()
    gc.freeze()  # nothing built so far is garbage: keep collections off the schedule
    print("ready", flush=True)
    t0 = float(sys.stdin.readline())
    result = sender.run(t0)
    result["nice"] = nice
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
