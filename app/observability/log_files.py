"""Size-based log rotation with age-based retention (spec 6.2: 100 MB files, 7 days).

The standard library rotates by size (``RotatingFileHandler``, numbered backups) or by time
(``TimedRotatingFileHandler``), not "by size, keep for N days". Rotated files here are named
``<component>.log.<UTC timestamp>`` so a file's age is in its name and its mtime, and nothing
has to be renamed in a chain on each rotation.

One file has one writer: give each process its own ``component`` (e.g. include the Serve
replica id). Start-up also sweeps rotated files of components that no longer run, such as
replicas that were replaced, which would otherwise stay on disk forever.
"""

from __future__ import annotations

import logging.handlers
import os
import time
from datetime import UTC, datetime
from pathlib import Path

_DAY_S = 86_400.0


def _rotated_files(log_path: Path) -> list[Path]:
    prefix = log_path.name + "."
    try:
        return [p for p in log_path.parent.iterdir() if p.name.startswith(prefix) and p.is_file()]
    except FileNotFoundError:
        return []


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:  # another process pruned it first
        return False
    return True


def prune_rotated(
    log_path: Path, *, retention_days: float, max_files: int, now: float | None = None
) -> list[Path]:
    """Delete ``log_path``'s rotated files older than the retention or beyond ``max_files``."""
    now = time.time() if now is None else now
    cutoff = now - retention_days * _DAY_S
    removed: list[Path] = []
    aged: list[tuple[float, Path]] = []
    for p in _rotated_files(log_path):
        try:
            mtime = p.stat().st_mtime
        except FileNotFoundError:
            continue
        if mtime < cutoff:
            if _unlink(p):
                removed.append(p)
        else:
            aged.append((mtime, p))
    aged.sort(reverse=True)  # newest first; keep the newest max_files
    for _, p in aged[max_files:]:
        if _unlink(p):
            removed.append(p)
    return removed


def sweep_directory(
    directory: Path, *, retention_days: float, keep: Path | None = None, now: float | None = None
) -> list[Path]:
    """Remove any ``*.log`` or rotated ``*.log.*`` file in ``directory`` past the retention.

    ``keep`` (the caller's own live file) is never removed. A live log older than the
    retention has not been written for that long: its writer is gone.
    """
    now = time.time() if now is None else now
    cutoff = now - retention_days * _DAY_S
    removed: list[Path] = []
    try:
        candidates = [
            p
            for p in directory.iterdir()
            if (p.name.endswith(".log") or ".log." in p.name) and p.is_file()
        ]
    except FileNotFoundError:
        return removed
    for p in candidates:
        if keep is not None and p == keep:
            continue
        try:
            old = p.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue
        if old and _unlink(p):
            removed.append(p)
    return removed


class RetentionRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Rotates at ``max_bytes``; prunes by age and count at start-up and on each rotation."""

    def __init__(
        self,
        filename: Path,
        *,
        max_bytes: int,
        retention_days: float,
        max_files: int,
    ) -> None:
        filename.parent.mkdir(parents=True, exist_ok=True)
        self.retention_days = retention_days
        self.max_files = max_files
        # backupCount only matters to the base class's own doRollover, replaced below.
        super().__init__(filename, maxBytes=max_bytes, backupCount=max_files, encoding="utf-8")
        self.prune()

    def prune(self) -> list[Path]:
        return prune_rotated(
            Path(self.baseFilename), retention_days=self.retention_days, max_files=self.max_files
        )

    def emit(self, record: logging.LogRecord) -> None:
        # The base class formats every record twice: once in shouldRollover just to measure
        # it (after a stat of the file), then again to write it. On the request path that
        # doubled the cost of each access line; here it is formatted once, measured, written.
        try:
            msg = self.format(record) + self.terminator
            if self.stream is None:
                self.stream = self._open()
            if self.maxBytes > 0 and self.stream.tell() + len(msg) >= self.maxBytes:
                self.doRollover()
                if self.stream is None:  # delay=True: doRollover leaves it closed
                    self.stream = self._open()
            self.stream.write(msg)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def doRollover(self) -> None:
        if self.stream:
            self.stream.close()
            self.stream = None
        base = Path(self.baseFilename)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        dest = base.with_name(f"{base.name}.{stamp}")
        n = 0
        while dest.exists():  # two rotations within one microsecond
            n += 1
            dest = base.with_name(f"{base.name}.{stamp}-{n}")
        if base.exists():
            os.replace(base, dest)
        self.prune()
        if not self.delay:
            self.stream = self._open()
