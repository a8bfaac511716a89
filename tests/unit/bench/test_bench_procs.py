"""The machine's CPU beside the watched processes' (``app.bench.procs``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bench import procs

_TICKS = procs._TICKS


def _task(root: Path, pid: int, name: str, cpu_ticks: tuple[int, int]) -> None:
    """A /proc/<pid>/stat line: the command name in parentheses may hold spaces."""
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    rest = ["S", *["0"] * 10, str(cpu_ticks[0]), str(cpu_ticks[1]), *["0"] * 30]
    (root / str(pid) / "stat").write_text(f"{pid} ({name}) " + " ".join(rest) + "\n")


def _box(root: Path, stat: str, tasks: dict[int, tuple[int, int]], at: float) -> procs.BoxSample:
    root.mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text(f"cpu  {stat}\ncpu0 1 2 3 4\nintr 99\n")
    (root / "self").mkdir(exist_ok=True)  # not a pid: skipped
    for pid, ticks in tasks.items():
        _task(root, pid, "ray::ServeReplica x" if pid == 10 else "gen", ticks)
    sample = procs.box_sample(root)
    assert sample is not None
    return procs.BoxSample(at, sample.tasks_cpu_s, sample.ticks)


def test_box_usage_counts_every_process_exactly_and_the_interrupts(tmp_path: Path) -> None:
    t = _TICKS
    # 10 s on a 2-core box. Task 10 used 8 s, task 11 1 s, task 12 started meanwhile and
    # used 0.5 s; task 13 ended (missed). /proc/stat: 2000 ticks in all, 40 of them
    # softirq (2% of the box: 4% of a core) and 10 steal.
    before = _box(
        tmp_path / "a",
        "1000 0 500 9000 10 0 100 0",
        {10: (2 * t, 1 * t), 11: (1 * t, 0), 13: (5 * t, 0)},
        at=100.0,
    )
    after = _box(
        tmp_path / "b",
        "2000 0 800 9640 20 0 140 10",
        {10: (9 * t, 2 * t), 11: (2 * t, 0), 12: (t // 2, 0)},
        at=110.0,
    )
    rows: list[dict[str, object]] = [
        {"name": "replica:gateway", "cpu_pct_of_core": 80.0},
        {"name": "generator:0", "cpu_pct_of_core": 10.0},
        {"name": "gone", "cpu_pct_of_core": None},
    ]
    box = procs.box_usage(before, after, rows, cores=2)
    assert box is not None
    assert box["processes_pct_of_core"] == pytest.approx(95.0)  # 8 + 1 + 0.5 s over 10 s
    assert box["interrupts_pct_of_core"] == pytest.approx(4.0)
    assert box["busy_pct_of_core"] == pytest.approx(99.0)
    assert box["steal_pct_of_core"] == pytest.approx(1.0)
    assert box["unwatched_pct_of_core"] == pytest.approx(5.0)


def test_box_usage_is_none_without_two_samples(tmp_path: Path) -> None:
    assert procs.box_sample(tmp_path / "missing") is None
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "stat").write_text("intr 1\n")
    assert procs.box_sample(tmp_path / "junk") is None
    old = _box(tmp_path / "old", "1 2 3 4", {}, at=1.0)  # an old kernel's shorter line
    assert old.ticks["steal"] == 0
    assert procs.box_usage(None, old, []) is None
    assert procs.box_usage(old, old, []) is None  # no time passed


def test_the_live_machine_counts_this_process_busy_loop() -> None:
    import os
    import time

    me = {os.getpid(): "me"}
    start, mine = procs.box_sample(), procs.snapshot(me)
    deadline = time.process_time() + 0.4
    while time.process_time() < deadline:
        pass
    end, mine_after = procs.box_sample(), procs.snapshot(me)
    assert start is not None
    assert end is not None
    box = procs.box_usage(start, end, procs.usage(mine, mine_after, end.at - start.at))
    assert box is not None
    # This process ran flat out; /proc's 10 ms ticks are the only slack.
    assert box["processes_pct_of_core"] >= 80
    assert box["unwatched_pct_of_core"] >= -6  # never much less than what is watched
