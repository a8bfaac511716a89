"""A tiny cron for the compose ``backup`` service (Kubernetes uses CronJobs instead).

Five-field cron expressions (minute hour day-of-month month day-of-week) with ``*``,
lists, ranges and steps; when both day fields are restricted a day matches either, as in
Vixie cron. The loop touches a heartbeat file so the container healthcheck can tell a
stuck scheduler from a sleeping one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

log = logging.getLogger("app.ops.scheduler")

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("dow", 0, 7))
HEARTBEAT_INTERVAL_S = 30.0


@dataclass(frozen=True)
class CronSpec:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 is folded into 0)
    day_restricted: bool
    weekday_restricted: bool

    def matches(self, t: datetime) -> bool:
        if t.minute not in self.minutes or t.hour not in self.hours:
            return False
        if t.month not in self.months:
            return False
        day_ok = t.day in self.days
        weekday_ok = (t.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            start, stop = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            start, stop = int(a), int(b)
        else:
            start = stop = int(body)
            if step_text:
                stop = high
        if step < 1 or not low <= start <= stop <= high:
            raise ValueError(f"cron {name} field {part!r} is outside {low}-{high}")
        values.update(range(start, stop + 1, step))
    return frozenset(values)


def parse_cron(expr: str) -> CronSpec:
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(f"cron expression {expr!r} needs 5 fields, got {len(parts)}")
    try:
        sets = [_field(p, n, lo, hi) for p, (n, lo, hi) in zip(parts, _FIELDS, strict=True)]
    except ValueError as exc:
        raise ValueError(f"bad cron expression {expr!r}: {exc}") from None
    minutes, hours, days, months, raw_weekdays = sets
    return CronSpec(
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=frozenset(d % 7 for d in raw_weekdays),
        day_restricted=parts[2] != "*",
        weekday_restricted=parts[4] != "*",
    )


def next_fire(spec: CronSpec, after: datetime) -> datetime:
    """The first matching minute strictly after ``after`` (an aware datetime)."""
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(366 * 24 * 60 * 5):  # leap-day schedules need up to ~4 years
        if spec.matches(t):
            return t
        t += timedelta(minutes=1)
    raise ValueError("cron expression never fires")


@dataclass
class Job:
    name: str
    cron: str
    action: Callable[[], object]


def run_forever(
    jobs: list[Job],
    *,
    timezone: str = "UTC",
    heartbeat: Path | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Run each job at its cron times; a failing job is logged and retried next time."""
    zone = ZoneInfo(timezone)
    specs = {job.name: parse_cron(job.cron) for job in jobs}
    now = datetime.fromtimestamp(clock(), tz=zone)
    due = {job.name: next_fire(specs[job.name], now) for job in jobs}
    for job in jobs:
        log.info("scheduled %s (%s), next at %s", job.name, job.cron, due[job.name].isoformat())
    while not should_stop():
        if heartbeat is not None:
            heartbeat.parent.mkdir(parents=True, exist_ok=True)
            heartbeat.touch()
        now = datetime.fromtimestamp(clock(), tz=zone)
        for job in jobs:
            if now >= due[job.name]:
                try:
                    result = job.action()
                    log.info("%s finished: %s", job.name, result)
                except Exception:
                    log.exception("%s failed", job.name)
                due[job.name] = next_fire(specs[job.name], now)
        wait = min((d - now).total_seconds() for d in due.values()) if due else 60.0
        sleep(max(0.5, min(HEARTBEAT_INTERVAL_S, wait)))
