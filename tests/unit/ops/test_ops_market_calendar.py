"""XNYS sessions through the precomputed table: weekends, holidays, early closes, DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.scaling.market_calendar import (
    CalendarUnavailable,
    MarketSchedule,
    SessionTable,
    active_profile,
)

NY = ZoneInfo("America/New_York")


def ny(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NY)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def schedule() -> MarketSchedule:
    # One table for the whole module (building it costs ~0.4 s): from Feb 2026 on.
    sched = MarketSchedule("XNYS", prescale_minutes=15)
    sched.table_for(utc(2026, 2, 20).timestamp())
    return sched


def test_market_is_closed_from_friday_close_to_monday_open(schedule: MarketSchedule) -> None:
    assert schedule.is_open(ny(2026, 11, 20, 15, 59))
    assert not schedule.is_open(ny(2026, 11, 20, 16, 0))
    for moment in (ny(2026, 11, 21, 12, 0), ny(2026, 11, 22, 23, 0), ny(2026, 11, 23, 9, 29)):
        assert schedule.profile_at(moment) != "market_hours"
    assert schedule.next_open(ny(2026, 11, 20, 16, 0)) == ny(2026, 11, 23, 9, 30).timestamp()
    assert schedule.profile_at(ny(2026, 11, 23, 9, 30)) == "market_hours"


def test_thanksgiving_is_off_hours_all_day(schedule: MarketSchedule) -> None:
    for hour in (9, 10, 12, 15):
        assert schedule.profile_at(ny(2026, 11, 26, hour, 45)) == "off_hours"
    assert schedule.next_open(ny(2026, 11, 26, 12, 0)) == ny(2026, 11, 27, 9, 30).timestamp()


def test_day_after_thanksgiving_closes_early_at_1pm(schedule: MarketSchedule) -> None:
    assert schedule.profile_at(ny(2026, 11, 27, 12, 59)) == "market_hours"
    assert schedule.profile_at(ny(2026, 11, 27, 13, 0)) == "off_hours"
    assert schedule.profile_at(ny(2026, 11, 27, 15, 0)) == "off_hours"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (date(2026, 3, 6), date(2026, 3, 9)),  # spring forward on Sunday 2026-03-08
        (date(2026, 10, 30), date(2026, 11, 2)),  # fall back on Sunday 2026-11-01
    ],
)
def test_open_stays_0930_new_york_across_dst_switch(
    schedule: MarketSchedule, before: date, after: date
) -> None:
    opens = []
    for day in (before, after):
        local_open = datetime(day.year, day.month, day.day, 9, 30, tzinfo=NY)
        assert schedule.profile_at(local_open) == "market_hours"
        assert schedule.profile_at(local_open - timedelta(seconds=1)) == "prescale"
        opens.append(local_open.astimezone(UTC).hour + local_open.astimezone(UTC).minute / 60)
    assert opens[0] != opens[1]  # the same 09:30 in New York is a different UTC hour
    assert sorted(opens) == [13.5, 14.5]


def test_prescale_window_starts_prescale_minutes_before_open(schedule: MarketSchedule) -> None:
    open_ = ny(2026, 11, 23, 9, 30)
    assert schedule.profile_at(open_ - timedelta(minutes=15)) == "prescale"
    assert schedule.profile_at(open_ - timedelta(minutes=15, seconds=1)) == "off_hours"
    assert schedule.profile_at(open_ - timedelta(minutes=1)) == "prescale"


def test_active_profile_reports_the_schedule_for_any_clock_form() -> None:
    when = ny(2026, 11, 24, 11, 0)
    assert active_profile(when) == "market_hours"
    assert active_profile(when.timestamp()) == "market_hours"
    assert active_profile(ny(2026, 11, 24, 9, 20), prescale_minutes=5) == "off_hours"


def test_naive_datetime_is_refused(schedule: MarketSchedule) -> None:
    with pytest.raises(ValueError, match="naive"):
        schedule.profile_at(datetime(2026, 11, 24, 11, 0))


def test_table_is_rebuilt_only_when_clock_leaves_its_range() -> None:
    calls: list[tuple[date, date]] = []

    def factory(exchange: str, start: date, end: date) -> SessionTable:
        calls.append((start, end))
        t0 = datetime(start.year, start.month, start.day, 14, 30, tzinfo=UTC).timestamp()
        opens = [t0 + 86400 * i for i in range((end - start).days)]
        return SessionTable(opens, [o + 6.5 * 3600 for o in opens])

    sched = MarketSchedule("TEST", table_factory=factory)
    base = utc(2026, 1, 5, 12, 0).timestamp()
    for minutes in range(0, 60 * 24 * 30, 7):
        sched.profile_at(base + minutes * 60)
    assert len(calls) == 1
    sched.profile_at(base + 380 * 86400)
    assert len(calls) == 2


def test_unknown_exchange_raises_calendar_unavailable() -> None:
    with pytest.raises(CalendarUnavailable):
        MarketSchedule("NOPE").is_open(utc(2026, 11, 24).timestamp())


def test_session_table_rejects_overlapping_sessions() -> None:
    with pytest.raises(CalendarUnavailable):
        SessionTable([0.0, 5.0], [10.0, 20.0])
