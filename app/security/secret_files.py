"""Files that hold secrets or their digests: private atomic writes and cheap change checks.

Stores are edited by the CLI while the server runs, so readers must never see a half
written file (temp file + ``os.replace``) and must notice a new version without a restart
(an ``os.stat`` at most once per interval, compared on inode, size and mtime).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model.common.artifact import write_atomic

PRIVATE_FILE_MODE = 0o600

FileFingerprint = tuple[int, int, int] | None


def fingerprint(path: Path) -> FileFingerprint:
    """Identity of the file's current version; ``None`` when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    # os.replace gives a new inode, so a rewrite within one mtime tick is still seen.
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FileChangeProbe:
    """Answers "has this file changed?" with at most one ``stat`` per ``interval_s``."""

    __slots__ = ("_interval_s", "_last_check", "_seen", "path")

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self.path = path
        self._interval_s = interval_s
        self._last_check = float("-inf")
        self._seen: FileFingerprint = None

    def mark_seen(self, seen: FileFingerprint) -> None:
        """Record the version just loaded (taken *before* reading, so a race re-reads)."""
        self._seen = seen
        self._last_check = time.monotonic()

    def changed(self) -> bool:
        now = time.monotonic()
        if now - self._last_check < self._interval_s:
            return False
        self._last_check = now
        return fingerprint(self.path) != self._seen


def atomic_write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, replacing any old file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode=PRIVATE_FILE_MODE)


@contextlib.contextmanager
def exclusive_edit(path: Path) -> Iterator[None]:
    """Serialise read-modify-write cycles of two CLI runs on the same store file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_json_store(path: Path, *, version: int, list_key: str) -> list[Any] | None:
    """The items of a versioned JSON store file (``{"version": N, list_key: [...]}``);
    None when the file does not exist. Raises ValueError/KeyError/TypeError when malformed
    (the caller names the store in its own error)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("version") != version:
        raise ValueError("unsupported store version")
    items = doc[list_key]
    if not isinstance(items, list):
        raise TypeError(f"{list_key} must be a list")
    return items


def write_json_store(path: Path, *, version: int, list_key: str, items: list[Any]) -> None:
    doc = {"version": version, list_key: items}
    atomic_write_private(path, json.dumps(doc, indent=2).encode("utf-8") + b"\n")
