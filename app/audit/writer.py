"""The audit trail of one gateway process: a bounded hand-off and one writer thread.

The request path calls :meth:`AuditTrail.submit` once per answered request: a bound
check, a ``SimpleQueue.put`` of references (a few microseconds; nothing is copied,
hashed or encoded there). Everything else (input hashes, JSON, writing, sealing,
retention) runs on the ``audit-writer`` thread, which writes what arrived within
``batch_window_s`` of a batch's first submission with one write and flush. When the
writer falls ``queue_size`` records behind, new records are dropped and counted
(``on_drop``, which the gateway wires to ``audit_records_dropped_total``) and the
prediction is served regardless; records the writer cannot write (disk full) count the
same way.

The bound is lock-free: the submitting thread only ever adds to ``_enqueued`` and the
writer only to ``_done``, so each counter has one writer and their difference is the
backlog. ``submit`` must be called from one thread (the gateway's event loop).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog

from app.audit.records import InputWindow, Submission, format_ts, records_of
from app.audit.store import AuditStream, claim_stream
from app.config.audit import Audit
from model.common.refs import ModelRef

log = structlog.get_logger("app.audit.writer")

_MAX_BATCH = 256  # submissions written per flush
# After a batch's first submission, the writer waits this long for more before writing, so
# trickling traffic costs one wake-up, write and flush per few records instead of per
# record. Bounds how late a record reaches the OS; skipped when a full batch is waiting.
BATCH_WINDOW_S = 0.005


def _no_drop_counter(n: int) -> None:
    return None


class AuditTrail:
    def __init__(
        self,
        root: Path,
        config: Audit,
        *,
        on_drop: Callable[[int], None] = _no_drop_counter,
        clock: Callable[[], float] = time.time,
        tick_s: float = 1.0,
        batch_window_s: float = BATCH_WINDOW_S,
    ) -> None:
        self.root = root
        self.config = config
        self.capacity = config.queue_size
        self._on_drop = on_drop
        self._clock = clock
        self._tick_s = tick_s
        self._batch_window_s = batch_window_s
        self._queue: queue.SimpleQueue[Submission | None] = queue.SimpleQueue()
        self._enqueued = 0  # records handed over (submitting thread only)
        self._done = 0  # records written or lost (writer thread only)
        self.dropped_full = 0  # submitting thread only
        self.lost = 0  # writer thread only
        self.written = 0  # writer thread only
        self._accepting = True
        self._stream: AuditStream | None = None
        self._thread: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        return self.dropped_full + self.lost

    # -- hot path ----------------------------------------------------------------------

    def submit(
        self,
        request_id: str,
        principal_id: str,
        windows: Sequence[InputWindow],
        predictions: Sequence[Mapping[str, Any]],
        latency_s: float,
        green: ModelRef | None,
    ) -> None:
        n = len(predictions)
        if not self._accepting or self._enqueued - self._done + n > self.capacity:
            self.dropped_full += n
            self._on_drop(n)
            return
        self._enqueued += n
        self._queue.put(
            Submission(
                self._clock(), request_id, principal_id, windows, predictions, latency_s, green
            )
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Claim a stream and start the writer; on failure keep serving, counting every
        record as dropped (so the alert says what the log says)."""
        if self._thread is not None:
            return
        try:
            self._stream = claim_stream(self.root, self.config, self._clock)
        except OSError as exc:
            log.error("audit_trail_unavailable", path=str(self.root), error=str(exc))
            self._accepting = False
            return
        self._accepting = True  # again, after a stop
        log.info("audit_trail_started", stream=str(self._stream.directory))
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, flush, release the stream (blocking: call off the loop)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._accepting = False  # nothing reads the queue after the marker: count, not lose
        self._queue.put(None)
        thread.join(timeout_s)
        if thread.is_alive():
            log.warning("audit_writer_did_not_stop", backlog=self._enqueued - self._done)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record handed over so far is written (tests, shutdown)."""
        target, deadline = self._enqueued, time.monotonic() + timeout_s
        while self._done < target and time.monotonic() < deadline:
            time.sleep(0.005)
        return self._done >= target

    # -- writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        stream = self._stream
        assert stream is not None
        stopping = False
        while not stopping:
            batch, stopping = self._next_batch()
            if batch:
                self._write(stream, batch)
            try:
                stream.tick()
            except OSError:
                log.exception("audit_seal_failed")  # retried on the next tick
        try:
            stream.close()
        except OSError:
            log.exception("audit_close_failed")

    def _next_batch(self) -> tuple[list[Submission], bool]:
        """Up to ``_MAX_BATCH`` submissions (none after ``tick_s`` of quiet), and whether
        ``stop`` was asked; after the first, what arrives within ``batch_window_s``."""
        batch: list[Submission] = []
        try:
            first = self._queue.get(timeout=self._tick_s)
        except queue.Empty:
            return batch, False
        if first is None:
            return batch, True
        batch.append(first)
        stopping = self._take_waiting(batch)
        if not stopping and len(batch) < _MAX_BATCH and self._batch_window_s > 0:
            time.sleep(self._batch_window_s)
            stopping = self._take_waiting(batch)
        return batch, stopping

    def _take_waiting(self, batch: list[Submission]) -> bool:
        """Move queued submissions into ``batch`` (up to ``_MAX_BATCH``); whether the stop
        marker came."""
        while len(batch) < _MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _write(self, stream: AuditStream, batch: list[Submission]) -> None:
        lines: list[bytes] = []
        total = 0
        for sub in batch:
            total += len(sub.predictions)
            try:
                lines += [
                    orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records_of(sub)
                ]
            except Exception:  # a record that cannot be built must not stop the trail
                log.exception("audit_record_failed", request_id=sub.request_id)
        try:
            if lines:
                stream.append(lines, format_ts(batch[0].at), format_ts(batch[-1].at))
            written = len(lines)
        except OSError:
            log.exception("audit_write_failed", records=len(lines))
            written = 0
        if total - written:
            self.lost += total - written
            self._on_drop(total - written)
        self.written += written
        self._done += total
