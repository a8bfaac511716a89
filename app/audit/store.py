"""The writing side of one audit stream: append, seal (rotate + gzip + chain), retain.

Only the writer thread calls this. A process owns a stream directory by holding an
exclusive ``flock`` on its ``.lock`` (:func:`claim_stream`), so gateway replicas sharing a
node write ``stream-0``, ``stream-1``, ... side by side, and a restarted replica takes a
free one back and continues its chain.

Records are compressed as they are written, into a hidden ``.audit-pending.tmp`` beside
``current.jsonl``, so a seal has no burst of work: it finishes that gzip stream instead of
compressing the whole file at once (a 64 MB file took ~1.3 s of CPU at once, beside the
serving replicas on the same cores). A restart part-way through a file compresses what it
reads back into a new pending stream while the replica starts. Where the pending stream
does not hold every byte of ``current.jsonl`` (a failed write) the seal compresses the
file itself, as it always did.

Sealing is ordered so a crash at any point is repaired on the next start, never leaving a
sealed file the chain does not know or a record twice: the gzip of ``current.jsonl`` in a
hidden temp file -> fsync -> append the ``seal`` entry -> rename into place -> delete
``current.jsonl``. Retention appends the ``retire`` entry first, then deletes.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import structlog

from app.audit.chain import (
    CHAIN,
    CURRENT,
    GENESIS,
    SEALED_RE,
    canonical,
    entry_hash,
    read_chain,
    sha256_file,
)
from app.audit.records import TS_FORMAT, format_ts
from app.config.audit import Audit
from model.common.artifact import fsync_path

log = structlog.get_logger("app.audit.store")

MAX_STREAMS = 64
_LOCK = ".lock"
_PENDING = ".audit-pending.tmp"  # matches recover()'s ".audit-*.tmp": removed after a crash


class AuditStream:
    def __init__(
        self,
        directory: Path,
        lock_fd: int,
        config: Audit,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self._lock_fd = lock_fd
        self.rotate_bytes, self.rotate_s = config.rotate_bytes, config.rotate_s
        self.retention_days = config.retention_days
        self._clock = clock
        self._n = 0  # next chain entry index
        self._head = GENESIS
        self._last_file_sha = ""
        self._next_seq = 1
        self._live: dict[str, tuple[str, str]] = {}  # sealed file -> (sha256, last_ts)
        self._file: IO[bytes] | None = None
        self._size = 0
        self._records = 0
        self._first_ts = self._last_ts = ""
        self._first_at = 0.0  # _first_ts as epoch seconds, parsed once when it is set
        self._next_retention = 0.0
        self._pending: _PendingGzip | None = None  # current.jsonl, compressed as written

    # -- start -------------------------------------------------------------------------

    def recover(self) -> None:
        """Load the chain and finish whatever a crash interrupted (ValueError: the chain
        itself is unreadable; leave it for ``cnnlstm audit verify`` to report)."""
        entries, torn = read_chain(self.directory)
        if torn:
            log.warning("audit_chain_torn_tail_dropped", stream=self.directory.name)
            _truncate_to_last_line(self.directory / CHAIN)
        retired = set()
        for entry in entries:
            if entry.get("event") == "seal":
                self._live[entry["file"]] = (entry["sha256"], entry["last_ts"])
                self._last_file_sha = entry["sha256"]
                match = SEALED_RE.match(entry["file"])
                if match:
                    self._next_seq = max(self._next_seq, int(match.group(1)) + 1)
            elif entry.get("event") == "retire":
                self._live.pop(entry["file"], None)
                retired.add(entry["file"])
        self._n, self._head = len(entries), entries[-1]["hash"] if entries else GENESIS
        last = entries[-1] if entries else {}
        for tmp in self.directory.glob(".audit-*.tmp"):
            final = self.directory / tmp.name[1:-4]
            sealed = last.get("file") == final.name and not final.exists()
            if sealed and sha256_file(tmp) == last.get("sha256"):
                os.replace(tmp, final)  # crashed between the seal entry and the rename
                continue
            tmp.unlink()
        for name in retired:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()  # crashed between retire and delete
        current, data = self.directory / CURRENT, b""
        if current.exists():
            _truncate_to_last_line(current)
            data = current.read_bytes()
            if data and hashlib.sha256(data).hexdigest() == last.get("raw_sha256"):
                current.unlink()  # crashed after sealing it, before deleting it
                data = b""
            elif data:
                lines = data.splitlines()
                self._size, self._records = len(data), len(lines)
                self._first_ts = orjson.loads(lines[0])["ts"]
                self._first_at = _epoch(self._first_ts)
                self._last_ts = orjson.loads(lines[-1])["ts"]
        if not entries:
            self._append_entry({"event": "open", "stream": self.directory.name})
        self._file = current.open("ab")
        self._pending = _PendingGzip.start(self.directory / _PENDING)
        if self._pending is not None and data:
            # The file read back is compressed now, while the replica starts, not at its
            # seal in the middle of serving: compressed whole there, it put the first seal
            # after every restart in a burst of 429s (BENCHMARKS.md, session 27).
            try:
                self._pending.write(data)
            except OSError:  # the seal compresses current.jsonl itself instead
                self._pending.discard()
                self._pending = None

    # -- writer thread -----------------------------------------------------------------

    def append(self, lines: list[bytes], first_ts: str, last_ts: str) -> None:
        """Write records (each a JSON line, times ``first_ts`` to ``last_ts``); flushed to
        the OS, not fsynced (a process crash loses nothing written, a power cut may)."""
        if self._file is None:  # a seal failed half-way: reopen and keep appending
            self._file = (self.directory / CURRENT).open("ab")
        data = b"".join(lines)
        try:
            self._file.write(data)
            self._file.flush()
        except OSError:
            self._cut_failed_write()
            raise
        if self._pending is not None:
            try:
                self._pending.write(data)
            except OSError:  # the seal compresses current.jsonl itself instead
                self._pending.discard()
                self._pending = None
        if not self._records:
            self._first_ts, self._first_at = first_ts, _epoch(first_ts)
        self._last_ts = last_ts
        self._size += len(data)
        self._records += len(lines)

    def _cut_failed_write(self) -> None:
        """A write that failed part-way (disk full) leaves part of a record at the end of
        the file; the next batch would be appended to it, one line that is neither record
        and fails every read of the file. Cut the file back to its last whole batch (what
        ``_size`` and the pending gzip hold); ``append`` reopens it."""
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()  # what its buffer still held is cut below
        current = self.directory / CURRENT
        try:
            if current.stat().st_size > self._size:  # never extend it
                os.truncate(current, self._size)
        except OSError:
            log.exception("audit_truncate_failed", stream=self.directory.name)

    def tick(self) -> None:
        """Seal the current file when it is big or old enough; apply retention now and
        then (also on a quiet stream). Cheap enough to call after every write."""
        now = self._clock()
        if self._records and (
            self._size >= self.rotate_bytes or now - self._first_at >= self.rotate_s
        ):
            self.seal()
        if now >= self._next_retention:
            self.retire_expired()
            self._next_retention = now + min(self.rotate_s, 3600.0)

    def seal(self) -> str | None:
        """Close the current file into a sealed, chained one; its name, or None if empty."""
        if not self._records:
            return None
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None  # append() reopens it if this seal fails
        now = self._clock()
        stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"audit-{self._next_seq:06d}-{stamp}.jsonl.gz"
        current, tmp = self.directory / CURRENT, self.directory / f".{name}.tmp"
        pending, self._pending = self._pending, None
        try:
            if pending is not None and pending.size == self._size:
                raw = pending.finish(tmp)
            else:
                if pending is not None:
                    pending.discard()
                raw = _gzip_into(current, tmp)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        digest = sha256_file(tmp)
        self._append_entry(
            {
                "event": "seal",
                "file": name,
                "sha256": digest,
                "raw_sha256": raw.hexdigest(),
                "records": self._records,
                "first_ts": self._first_ts,
                "last_ts": self._last_ts,
                "prev_file_sha256": self._last_file_sha,
                "at": format_ts(now),
            }
        )
        os.replace(tmp, self.directory / name)
        current.unlink()
        fsync_path(self.directory)
        self._live[name] = (digest, self._last_ts)
        self._last_file_sha, self._next_seq = digest, self._next_seq + 1
        self._size = self._records = 0
        self._first_ts = self._last_ts = ""
        self._file = current.open("ab")
        self._pending = _PendingGzip.start(self.directory / _PENDING)
        log.info(
            "audit_file_sealed", stream=self.directory.name, file=name, sha256=digest,
            chain_head=self._head,
        )  # fmt: skip
        return name

    def retire_expired(self) -> list[str]:
        """Remove sealed files whose last record is older than the retention."""
        cutoff = format_ts(self._clock() - self.retention_days * 86400.0)
        expired = [(n, sha) for n, (sha, last) in self._live.items() if last < cutoff]
        for name, sha in sorted(expired):
            self._append_entry(
                {
                    "event": "retire",
                    "file": name,
                    "sha256": sha,
                    "reason": "retention",
                    "retention_days": self.retention_days,
                    "at": format_ts(self._clock()),
                }
            )
            del self._live[name]
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()
        return [name for name, _ in expired]

    def close(self) -> None:
        """Flush and release the stream; the current file stays open for the next run."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        if self._pending is not None:  # the next run compresses what it reads back
            self._pending.discard()
            self._pending = None
        os.close(self._lock_fd)  # releases the flock

    def _append_entry(self, fields: dict[str, Any]) -> None:
        entry = {**fields, "n": self._n, "prev": self._head}
        entry["hash"] = entry_hash(entry)
        fd = os.open(self.directory / CHAIN, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            size = os.fstat(fd).st_size
            # write(2) may take part of the line (a full disk says so by the count, then
            # fails): finish it, or cut it off, since the next entry would be appended
            # to a torn one and the chain would no longer read.
            try:
                rest = memoryview(canonical(entry) + b"\n")
                while rest:
                    rest = rest[os.write(fd, rest) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        self._n, self._head = self._n + 1, entry["hash"]


def claim_stream(root: Path, config: Audit, clock: Callable[[], float] = time.time) -> AuditStream:
    """The first stream under ``root`` no other process holds, recovered and open."""
    for i in range(MAX_STREAMS):
        directory = root / f"stream-{i}"
        directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        stream = AuditStream(directory, fd, config, clock)
        try:
            stream.recover()
        except (ValueError, KeyError) as exc:  # an unreadable chain: keep it as evidence
            log.error("audit_stream_unusable", stream=directory.name, error=str(exc))
            os.close(fd)
            continue
        return stream
    raise OSError(f"no free audit stream under {root} (at most {MAX_STREAMS})")


def _epoch(ts: str) -> float:
    return datetime.strptime(ts, TS_FORMAT).replace(tzinfo=UTC).timestamp()


# gzip's fastest level. A seal runs beside the serving replicas on the same cores: a 64 MB
# file (~30 s of records at 4000 predictions/s) took ~1.3 s of CPU at the default level 9,
# and its burst showed as seconds of 429s in the /predict/batch bench (BENCHMARKS.md,
# session 13). Level 1 compresses the same JSON lines 4-5x faster to a file ~13 % larger
# (6.5x instead of 7.4x smaller than the lines).
GZIP_LEVEL = 1


class _PendingGzip:
    """The gzip of ``current.jsonl`` written as its records are (:data:`GZIP_LEVEL`), and
    the SHA-256 of what went in."""

    def __init__(self, path: Path, file: IO[bytes]) -> None:
        self.path, self._file = path, file
        self._deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        self.raw = hashlib.sha256()
        self.size = 0  # bytes of records taken

    @classmethod
    def start(cls, path: Path) -> _PendingGzip | None:
        """A new pending file at ``path``; None when it cannot be created (the seal then
        compresses current.jsonl itself)."""
        try:
            return cls(path, path.open("wb"))
        except OSError:
            return None

    def write(self, data: bytes) -> None:
        self.raw.update(data)
        self._file.write(self._deflate.compress(data))
        self.size += len(data)

    def finish(self, target: Path) -> hashlib._Hash:
        """End the gzip stream, fsync it and move it to ``target``; the raw digest."""
        try:
            self._file.write(self._deflate.flush())
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()
        os.replace(self.path, target)
        return self.raw

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self.path.unlink(missing_ok=True)


def _gzip_into(source: Path, target: Path) -> hashlib._Hash:
    """Compress ``source`` into ``target`` (fsynced); the digest of what went in."""
    raw = hashlib.sha256()
    with source.open("rb") as src, target.open("wb") as dst:
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=dst, mtime=0, compresslevel=GZIP_LEVEL
        ) as gz:
            while chunk := src.read(1 << 20):
                raw.update(chunk)
                gz.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return raw


def _truncate_to_last_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
