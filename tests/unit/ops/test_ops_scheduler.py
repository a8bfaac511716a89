"""The compose backup service's cron: parsing, next fire times, and the loop."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

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
    spec = parse_cron("5,35 * * * *")
    assert next_fire(spec, at(2026, 11, 27, 1, 5)) == at(2026, 11, 27, 1, 35)
    assert next_fire(spec, at(2026, 11, 27, 1, 35)) == at(2026, 11, 27, 2, 5)


def test_day_and_month_names_are_understood() -> None:
    weekdays = parse_cron("0 2 * * MON-FRI")
    assert next_fire(weekdays, at(2026, 11, 27, 2, 0)) == at(2026, 11, 30, 2, 0)  # Fri -> Mon
    assert next_fire(parse_cron("0 2 * * mon-fri"), at(2026, 11, 28)) == at(2026, 11, 30, 2, 0)
    january = parse_cron("0 2 * JAN *")
    assert next_fire(january, at(2026, 11, 27)) == at(2027, 1, 1, 2, 0)
    assert next_fire(january, at(2027, 1, 31, 2, 0)) == at(2028, 1, 1, 2, 0)


@pytest.mark.parametrize(
    ("macro", "after", "expected"),
    [
        ("@daily", at(2026, 11, 27, 12, 0), at(2026, 11, 28)),
        ("@midnight", at(2026, 11, 27, 12, 0), at(2026, 11, 28)),
        ("@hourly", at(2026, 11, 27, 12, 0), at(2026, 11, 27, 13, 0)),
        ("@weekly", at(2026, 11, 27, 12, 0), at(2026, 11, 29)),  # Sunday
        ("@monthly", at(2026, 11, 27, 12, 0), at(2026, 12, 1)),
        ("@yearly", at(2026, 11, 27, 12, 0), at(2027, 1, 1)),
        ("@annually", at(2026, 11, 27, 12, 0), at(2027, 1, 1)),
        ("@DAILY", at(2026, 11, 27, 12, 0), at(2026, 11, 28)),
    ],
)
def test_macros_are_understood(macro: str, after: datetime, expected: datetime) -> None:
    assert next_fire(parse_cron(macro), after) == expected


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    spec = parse_cron("0 0 1 * 0")  # the 1st, or any Sunday (Vixie cron)
    assert next_fire(spec, at(2026, 11, 27, 12, 0)) == at(2026, 11, 29, 0, 0)


def test_next_fire_is_in_the_zone_of_its_argument_across_a_dst_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    spec = parse_cron("30 2 * * *")  # 02:30 does not exist on 29 March 2026 in Berlin
    first = next_fire(spec, datetime(2026, 3, 28, 3, 0, tzinfo=berlin))
    assert first == datetime(2026, 3, 29, 3, 0, tzinfo=berlin)  # Debian cron: run it at once
    assert next_fire(spec, first) == datetime(2026, 3, 30, 2, 30, tzinfo=berlin)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("0 2 * *", "needs 5 fields"),
        ("0 0 2 * * *", "needs 5 fields"),  # seconds: not for Kubernetes CronJobs
        ("", "needs 5 fields"),
        ("61 * * * *", "bad minute"),
        ("0 25 * * *", "bad hour"),
        ("0 2 * * 8", "bad day-of-week"),
        ("0 2 * 13 *", "bad month"),
        ("0 2 * * FUN", "bad day-of-week"),
        ("*/0 * * * *", "bad minute"),
        ("x * * * *", "bad minute"),
        ("0 0 31 2 *", "bad day-of-month"),  # never fires
        ("@fortnightly", "unknown macro"),
        ("@every 1h", "unknown macro"),
        ("0 2 L * *", "not standard cron"),
        ("0 2 * * 1#2", "not standard cron"),
        ("0 2 * * 5L", "not standard cron"),
    ],
)
def test_bad_expressions_are_rejected_with_the_reason(bad: str, reason: str) -> None:
    with pytest.raises(ValueError, match="cron") as info:
        parse_cron(bad)
    assert repr(bad) in str(info.value)
    assert reason in str(info.value)


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


def test_an_hourly_job_runs_once_an_hour_through_a_repeated_dst_hour() -> None:
    # New York falls back on 1 November 2026: 01:00-02:00 happens twice (05:00 and 06:00
    # UTC). Wall times of one zone compare without their UTC offset, so the loop must
    # compare instants, or the second 01:00 looks due all through the first.
    now = [at(2026, 11, 1, 4, 30).timestamp()]
    ran: list[float] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    run_forever(
        [Job("hourly", "0 * * * *", lambda: ran.append(now[0]))],
        timezone="America/New_York",
        clock=lambda: now[0],
        sleep=sleep,
        should_stop=lambda: now[0] > at(2026, 11, 1, 7, 30).timestamp(),
    )
    fired = [datetime.fromtimestamp(t, tz=UTC).strftime("%H:%M") for t in ran]
    assert fired == ["05:00", "06:00", "07:00"]  # 01:00 EDT, 01:00 EST, 02:00 EST
