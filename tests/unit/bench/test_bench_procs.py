"""The machine's CPU beside the watched processes' (``app.bench.procs``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bench import procs


def _stat(tmp_path: Path, name: str, fields: str) -> Path:
    path = tmp_path / name
    path.write_text(f"cpu  {fields}\ncpu0 1 2 3 4\nintr 99\n")
    return path


def test_box_usage_is_in_percent_of_a_core_and_names_what_no_process_accounts_for(
    tmp_path: Path,
) -> None:
    # user nice system idle iowait irq softirq steal, over 10 s of a 2-core box at 100 Hz
    before = procs.box_sample(_stat(tmp_path, "a", "1000 0 500 9000 10 0 100 0 0 0"))
    after = procs.box_sample(_stat(tmp_path, "b", "2200 0 800 9270 20 0 300 20 0 0"))
    rows: list[dict[str, object]] = [
        {"name": "replica:gateway", "cpu_pct_of_core": 80.0},
        {"name": "generator:0", "cpu_pct_of_core": 10.0},
        {"name": "gone", "cpu_pct_of_core": None},
    ]
    box = procs.box_usage(before, after, rows, cores=2)
    assert box is not None
    # 2000 ticks in all: 1 tick = 0.1% of one core here; busy = 1200 + 300 + 200 + 20.
    assert box["busy_pct_of_core"] == pytest.approx(172.0)
    assert box["user_pct_of_core"] == pytest.approx(120.0)
    assert box["softirq_pct_of_core"] == pytest.approx(20.0)
    assert box["steal_pct_of_core"] == pytest.approx(2.0)
    assert box["idle_pct_of_core"] == pytest.approx(27.0)
    assert box["unwatched_pct_of_core"] == pytest.approx(82.0)


def test_box_usage_is_none_without_two_samples(tmp_path: Path) -> None:
    assert procs.box_sample(tmp_path / "missing") is None
    assert procs.box_sample(_stat(tmp_path, "odd", "")) is not None  # old kernels: zeros
    (tmp_path / "junk").write_text("intr 1\n")
    assert procs.box_sample(tmp_path / "junk") is None
    same = procs.box_sample(_stat(tmp_path, "s", "1 2 3 4 5 6 7 8"))
    assert procs.box_usage(None, same, []) is None
    assert procs.box_usage(same, same, []) is None  # no time passed
