"""Size-based rotation and age-based retention of log files (spec 6.2)."""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path

import structlog

from app.config import Logging
from app.observability.log_files import (
    RetentionRotatingFileHandler,
    prune_rotated,
    sweep_directory,
)
from app.observability.logging import configure_logging

DAY = 86_400.0


def age(path: Path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t))


def rotated(log: Path) -> list[Path]:
    return sorted(p for p in log.parent.iterdir() if p.name.startswith(log.name + "."))


def write_records(handler: logging.Handler, n: int, size: int = 100) -> None:
    for _ in range(n):
        handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, "x" * size, None, None))


def test_rotation_happens_at_the_size_limit(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    handler = RetentionRotatingFileHandler(log, max_bytes=1000, retention_days=7, max_files=50)
    try:
        write_records(handler, 9)  # 9 x 101 bytes: still under 1000
        assert rotated(log) == []
        write_records(handler, 2)
        assert len(rotated(log)) == 1
        assert log.stat().st_size < 1000
        assert all(p.stat().st_size <= 1000 for p in rotated(log))
    finally:
        handler.close()


def test_rotation_keeps_at_most_max_files(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    handler = RetentionRotatingFileHandler(log, max_bytes=200, retention_days=7, max_files=3)
    try:
        write_records(handler, 40)
        assert len(rotated(log)) == 3
    finally:
        handler.close()


def test_files_older_than_retention_are_removed_on_rotation(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    old = tmp_path / "gateway.log.20200101T000000000000Z"
    recent = tmp_path / "gateway.log.20200102T000000000000Z"
    old.write_text("old\n")
    recent.write_text("recent\n")
    handler = RetentionRotatingFileHandler(log, max_bytes=200, retention_days=7, max_files=50)
    try:
        age(old, 8)
        age(recent, 6)
        write_records(handler, 3)  # forces a rotation, which prunes
        assert not old.exists()
        assert recent.exists()
    finally:
        handler.close()


def test_prune_rotated_removes_only_this_logs_old_files(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    mine_old = tmp_path / "a.log.1"
    mine_new = tmp_path / "a.log.2"
    other_old = tmp_path / "b.log.1"
    for p in (log, mine_old, mine_new, other_old):
        p.write_text("x")
    for p in (log, mine_old, other_old):
        age(p, 30)
    removed = prune_rotated(log, retention_days=7, max_files=10)
    assert removed == [mine_old]
    assert all(p.exists() for p in (log, mine_new, other_old))


def test_start_up_sweeps_stale_files_of_other_components(tmp_path: Path) -> None:
    dead_replica = tmp_path / "predictor-r9.log"
    dead_rotated = tmp_path / "predictor-r9.log.20240101T000000000000Z"
    live_other = tmp_path / "predictor-r1.log"
    unrelated = tmp_path / "notes.txt"
    for p in (dead_replica, dead_rotated, live_other, unrelated):
        p.write_text("x")
    for p in (dead_replica, dead_rotated, unrelated):
        age(p, 10)

    configure_logging(
        Logging(directory=tmp_path, retention_days=7), component="gateway", stream=io.StringIO()
    )
    assert not dead_replica.exists()
    assert not dead_rotated.exists()
    assert live_other.exists()
    assert unrelated.exists()  # not a log file: not ours to delete


def test_sweep_never_removes_the_callers_own_file(tmp_path: Path) -> None:
    own = tmp_path / "gateway.log"
    own.write_text("x")
    age(own, 30)
    assert sweep_directory(tmp_path, retention_days=7, keep=own) == []
    assert own.exists()


def test_configured_size_limit_rotates_structlog_output(tmp_path: Path) -> None:
    # 0.001 MB = 1048 bytes: a handful of lines per file.
    config = Logging(directory=tmp_path, max_log_size_mb=0.001, max_files=100)
    configure_logging(config, component="gw", stream=io.StringIO())
    log = structlog.get_logger("x")
    for i in range(40):
        log.info("filler", i=i, pad="p" * 50)
    files = rotated(tmp_path / "gw.log")
    assert len(files) >= 2
    assert all(p.stat().st_size <= 1048 + 200 for p in files)
