"""Exchange sessions as sorted epoch-second arrays, so "is the market open?" is a bisect.

The autoscaling policy asks this every control-loop tick (~0.1 s) inside the Serve
controller, so the hot path must not touch pandas: :class:`SessionTable` is built once
from ``exchange_calendars`` (weekends, holidays, early closes, the exchange's time zone and
its DST rules are all in there) and then answers with two ``bisect`` calls. Times are UTC
epoch seconds throughout; DST only moves where the opens land in UTC, which the library
has already resolved.

Lunch breaks (e.g. XHKG) count as market hours: scaling down for an hour only to scale
back up is churn, not savings.
"""

from __future__ import annotations

import functools
import time
import warnings
from bisect import bisect_right
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Literal

ProfileName = Literal["market_hours", "off_hours", "prescale"]

# How far the precomputed table reaches. A rebuild (~0.4 s of pandas) happens when the
# clock gets within REBUILD_MARGIN of either end: about once a year in production.
LOOKBACK_DAYS = 7
HORIZON_DAYS = 400
REBUILD_MARGIN_S = 30 * 86400.0


class CalendarUnavailable(ValueError):
    """The exchange is unknown, or its calendar cannot cover the requested dates."""


class SessionTable:
    """Open/close instants of consecutive sessions, sorted, as UTC epoch seconds."""

    def __init__(self, opens: Sequence[float], closes: Sequence[float]) -> None:
        if not opens or len(opens) != len(closes):
            raise CalendarUnavailable("a session table needs matching, non-empty opens/closes")
        for i, (o, c) in enumerate(zip(opens, closes, strict=True)):
            if not o < c or (i and o < closes[i - 1]):
                raise CalendarUnavailable(f"session {i} is out of order: open={o} close={c}")
        self._opens = [float(o) for o in opens]
        self._closes = [float(c) for c in closes]

    @classmethod
    def from_exchange(cls, exchange: str, start: date, end: date) -> SessionTable:
        """Sessions of ``exchange`` (an ISO MIC such as ``XNYS``) between two dates."""
        return _exchange_table(exchange, start.isoformat(), end.isoformat())

    def __len__(self) -> int:
        return len(self._opens)

    def session_at(self, t: float) -> tuple[float, float] | None:
        """The (open, close) of the session in progress at ``t``; close is exclusive."""
        i = bisect_right(self._opens, t) - 1
        if i >= 0 and t < self._closes[i]:
            return self._opens[i], self._closes[i]
        return None

    def next_open(self, t: float) -> float | None:
        """The first open strictly after ``t``, or None past the end of the table."""
        i = bisect_right(self._opens, t)
        return self._opens[i] if i < len(self._opens) else None


@functools.lru_cache(maxsize=16)
def _exchange_table(exchange: str, start: str, end: str) -> SessionTable:
    # Imported here: pandas and the calendar rules cost ~1 s to import, and only the
    # (rare) table build needs them.
    import exchange_calendars as xcals

    try:
        with warnings.catch_warnings():
            # exchange_calendars still reads Series.values, which pandas 3.1 deprecates;
            # it is the library's business, and noise in every log that builds a table.
            warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
            calendar = xcals.get_calendar(exchange, start=start, end=end)
    except Exception as exc:  # the library raises a zoo of types for bad names/ranges
        raise CalendarUnavailable(f"no {exchange} calendar for {start}..{end}: {exc}") from exc
    opens = calendar.opens.to_numpy(dtype="datetime64[ns]").astype("datetime64[s]")
    closes = calendar.closes.to_numpy(dtype="datetime64[ns]").astype("datetime64[s]")
    return SessionTable(opens.astype("int64").tolist(), closes.astype("int64").tolist())


TableFactory = Callable[[str, date, date], SessionTable]


def to_epoch(now: float | datetime | None) -> float:
    """Epoch seconds from a float, an aware datetime, or None (the wall clock)."""
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous across DST: pass an aware one")
        return now.timestamp()
    return float(now)


class MarketSchedule:
    """Which autoscaling regime applies at an instant, for one exchange."""

    def __init__(
        self,
        exchange: str = "XNYS",
        prescale_minutes: float = 15.0,
        *,
        table_factory: TableFactory = SessionTable.from_exchange,
    ) -> None:
        self.exchange = exchange
        self.prescale_s = float(prescale_minutes) * 60.0
        self._factory = table_factory
        self._table: SessionTable | None = None
        self._valid_from = 0.0
        self._valid_until = -1.0

    def table_for(self, t: float) -> SessionTable:
        """The session table covering ``t``, rebuilt only when ``t`` nears its edges."""
        if self._table is None or not self._valid_from <= t <= self._valid_until:
            day = datetime.fromtimestamp(t, tz=UTC).date()
            start = day - timedelta(days=LOOKBACK_DAYS)
            end = day + timedelta(days=HORIZON_DAYS)
            self._table = self._factory(self.exchange, start, end)
            begin = datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp()
            finish = datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp()
            self._valid_from = begin + 86400.0
            self._valid_until = finish - REBUILD_MARGIN_S
        return self._table

    def is_open(self, now: float | datetime | None = None) -> bool:
        t = to_epoch(now)
        return self.table_for(t).session_at(t) is not None

    def next_open(self, now: float | datetime | None = None) -> float | None:
        t = to_epoch(now)
        return self.table_for(t).next_open(t)

    def profile_at(self, now: float | datetime | None = None) -> ProfileName:
        """``market_hours`` in a session, ``prescale`` just before one, else ``off_hours``."""
        t = to_epoch(now)
        table = self.table_for(t)
        if table.session_at(t) is not None:
            return "market_hours"
        upcoming = table.next_open(t)
        if upcoming is not None and upcoming - t <= self.prescale_s:
            return "prescale"
        return "off_hours"


@functools.lru_cache(maxsize=8)
def schedule_for(exchange: str, prescale_minutes: float) -> MarketSchedule:
    """One shared schedule per (exchange, pre-scale) pair for a process."""
    return MarketSchedule(exchange, prescale_minutes)


def active_profile(
    now: float | datetime | None = None,
    *,
    exchange: str = "XNYS",
    prescale_minutes: float = 15.0,
) -> ProfileName:
    """The autoscaling regime in force at ``now``: what ``/stats`` and ``/metrics`` report.

    Uses the same rules as :class:`app.scaling.autoscaling_policy.MarketHoursPolicy`, so the
    gateway can show what the Serve controller is doing without asking it.
    """
    return schedule_for(exchange, float(prescale_minutes)).profile_at(now)
