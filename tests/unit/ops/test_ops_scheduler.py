"""The compose backup service's cron: parsing, next fire times, and the loop."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.ops.scheduler import Job, next_fire, parse_cron, run_forever


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_daily_schedule_fires_next_at_2am() -> None:
    spec = parse_cron("0 2 * * *")
    assert next_fire(spec, at(2026, 11, 27, 1, 59)) == at(2026, 11, 27, 2, 0)
    assert next_fire(spec, at(2026, 11, 27, 2, 0)) == at(2026, 11, 28, 2, 0)


def test_steps_ranges_and_lists_are_understood() -> None:
    spec = parse_cron("*/15 9-17 * * 1-5")
    assert next_fire(spec, at(2026, 11, 27, 17, 50)) == at(2026, 11, 30, 9, 0)  # Fri -> Mon
    assert parse_cron("5,35 * * * *").minutes == frozenset({5, 35})


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    spec = parse_cron("0 0 1 * 0")  # the 1st, or any Sunday (Vixie cron)
    assert next_fire(spec, at(2026, 11, 27, 12, 0)) == at(2026, 11, 29, 0, 0)


@pytest.mark.parametrize("bad", ["0 2 * *", "61 * * * *", "0 2 * * 8", "*/0 * * * *", "x * * * *"])
def test_bad_expressions_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        parse_cron(bad)


def test_loop_runs_each_job_at_its_time_and_beats(tmp_path: Path) -> None:
    now = [at(2026, 11, 27, 1, 58).timestamp()]
    ran: list[tuple[str, float]] = []
    heartbeat = tmp_path / "hb"

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def boom() -> None:
        ran.append(("configs", now[0]))
        raise RuntimeError("disk full")  # logged, and the loop carries on

    jobs = [
        Job("models", "0 2 * * *", lambda: ran.append(("models", now[0]))),
        Job("configs", "0 3 * * *", boom),
    ]
    run_forever(
        jobs,
        heartbeat=heartbeat,
        clock=lambda: now[0],
        sleep=sleep,
        should_stop=lambda: now[0] > at(2026, 11, 28, 3, 30).timestamp(),
    )
    fired = [(name, datetime.fromtimestamp(t, tz=UTC).strftime("%d %H:%M")) for name, t in ran]
    assert fired == [("models", "27 02:00"), ("configs", "27 03:00"), ("models", "28 02:00"),
                     ("configs", "28 03:00")]  # fmt: skip
    assert heartbeat.exists()
