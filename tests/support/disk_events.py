"""What a piece of code did to the disk, in order: for tests that a file is flushed before a
name points at it, or before the copy it replaces is removed (a power cut in between)."""

from __future__ import annotations

import os
from typing import Any

import pytest

DiskEvents = list[tuple[str, str]]


def record_disk_events(monkeypatch: pytest.MonkeyPatch) -> DiskEvents:
    """``("fsync", path)``, ``("replace", destination)`` and ``("unlink", path)`` as the
    calls happen; each call still does its work."""
    events: DiskEvents = []
    real_fsync, real_replace, real_unlink = os.fsync, os.replace, os.unlink

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst, **kwargs)

    def unlink(path: Any, **kwargs: Any) -> None:
        events.append(("unlink", str(path)))
        real_unlink(path, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "unlink", unlink)
    return events
