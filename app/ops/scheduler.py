"""A tiny cron for the compose ``backup`` service (Kubernetes uses CronJobs instead).

Schedules are what a Kubernetes CronJob accepts, since the same ``schedule`` string goes
into ``k8s/backup-cronjobs.yaml``: five fields (minute hour day-of-month month
day-of-week) with ``*``, lists, ranges, steps and the names ``JAN``-``DEC`` and
``SUN``-``SAT``, or one of the macros ``@yearly`` (``@annually``), ``@monthly``,
``@weekly``, ``@daily`` (``@midnight``) and ``@hourly``. Parsing and the next fire time
come from ``cronsim``: when both day fields are restricted a day matches either, as in
Vixie cron, and daylight-saving gaps and repeats are handled as Debian cron does. The
loop touches a heartbeat file so the container healthcheck can tell a stuck scheduler
from a sleeping one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

log = logging.getLogger("app.ops.scheduler")

HEARTBEAT_INTERVAL_S = 30.0
FIELDS = "minute hour day-of-month month day-of-week"
# The macros Kubernetes CronJobs (robfig/cron) accept, as five-field expressions.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# A fixed instant to validate against: only the parse matters, not the time.
_PROBE = datetime(2000, 1, 1)


@dataclass(frozen=True)
class CronSpec:
    """A validated schedule: ``expression`` as written, ``fields`` its five-field form."""

    expression: str
    fields: str


def _bad(expr: str, reason: str) -> ValueError:
    return ValueError(f"bad cron expression {expr!r}: {reason}")


def parse_cron(expr: str) -> CronSpec:
    """Validate a schedule; ``ValueError`` (naming the expression and the fault) if bad."""
    text = expr.strip()
    if text.startswith("@"):
        fields = MACROS.get(text.lower())
        if fields is None:
            raise _bad(expr, f"unknown macro; use one of {', '.join(MACROS)}")
    else:
        fields = " ".join(text.split())
        count = len(fields.split())
        if count != 5:
            raise _bad(expr, f"needs 5 fields ({FIELDS}) or a macro like @daily, got {count}")
    try:
        sim = CronSim(fields, _PROBE)
    except CronSimError as exc:  # e.g. "Bad hour"
        raise _bad(expr, f"{str(exc).lower()} field") from None
    # cronsim also knows L, LW, W and # (last / nth weekday): Kubernetes does not.
    if any(d < 0 for d in sim.days) or any(isinstance(w, tuple) for w in sim.weekdays):
        raise _bad(expr, "L, W and # are not standard cron (Kubernetes CronJobs reject them)")
    return CronSpec(expression=expr, fields=fields)


def next_fire(spec: CronSpec, after: datetime) -> datetime:
    """The first matching minute strictly after ``after`` (an aware datetime), in its zone."""
    try:
        return next(CronSim(spec.fields, after))
    except StopIteration:
        raise ValueError(f"cron expression {spec.expression!r} never fires") from None


@dataclass
class Job:
    name: str
    cron: str
    action: Callable[[], object]
    timezone: str | None = None  # the zone ``cron`` is read in; None: run_forever's


def run_forever(
    jobs: list[Job],
    *,
    timezone: str = "UTC",
    heartbeat: Path | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Run each job at its cron times (in its own zone, else ``timezone``); a failing job
    is logged and retried next time."""
    zones = {job.name: ZoneInfo(job.timezone or timezone) for job in jobs}
    specs = {job.name: parse_cron(job.cron) for job in jobs}
    start = clock()
    due = {
        job.name: next_fire(specs[job.name], datetime.fromtimestamp(start, tz=zones[job.name]))
        for job in jobs
    }
    for job in jobs:
        log.info("scheduled %s (%s), next at %s", job.name, job.cron, due[job.name].isoformat())
    while not should_stop():
        if heartbeat is not None:
            heartbeat.parent.mkdir(parents=True, exist_ok=True)
            heartbeat.touch()
        now = clock()
        # Instants, not datetimes: two datetimes of one zone compare and subtract by wall
        # time (their fold ignored), so in a repeated DST hour the second 01:00 would be
        # "due" all through the first and the job would run on every pass.
        for job in jobs:
            if now >= due[job.name].timestamp():
                try:
                    result = job.action()
                    log.info("%s finished: %s", job.name, result)
                except Exception:
                    log.exception("%s failed", job.name)
                after = datetime.fromtimestamp(now, tz=zones[job.name])
                due[job.name] = next_fire(specs[job.name], after)
        wait = min(d.timestamp() for d in due.values()) - now if due else 60.0
        sleep(max(0.5, min(HEARTBEAT_INTERVAL_S, wait)))
