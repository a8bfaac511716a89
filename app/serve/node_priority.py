"""Ray's own processes on a node yield the CPU to the serving replicas there.

A node that serves also runs Ray's housekeeping: the GCS, the dashboard and metrics agent,
the runtime-env agent, the log and autoscaler monitors, Serve's controller and proxy, and
our rollout controller. At 850-950 req/s on two cores they take ~10 % of a core between
them, in bursts (a metrics export, a control-loop pass); each burst preempts the gateway or
the predictor for a few milliseconds, and those are the moments a prediction queue builds.
At nice 10 (``serving.housekeeping_niceness``) they still get every idle cycle, but the
kernel no longer lets them preempt the replicas. Measured A/B/A/B on fresh stacks (the
bench, 20 s per rate): p99 at 850 req/s 55 / 50 ms against 111 / 109 at nice 0, at 950
req/s 147 / 61 against 187 / 171; refusals 0 / 0 and 108 / 0 against 36 / 73 and 433 / 193
(BENCHMARKS.md, session 12).

What is lowered is a positive list, found from the calling replica's own raylet: its
children that are one of Ray's housekeeping actors, and its siblings that are one of Ray's
daemons. Never the raylet itself (the workers it starts would inherit its nice value, so a
restarted replica would come up low), never a serving replica or an idle worker (which
may become one), never a process outside Ray (a load generator beside the driver). Only
ever raised: a process an operator set lower stays where it is.

Linux only (``/proc``); elsewhere nothing is found. The nice value is per thread: every
thread of a chosen process is raised, a thread started later inherits the value of the one
that starts it, and the next pass catches any other. Raising the nice value of one's own
processes needs no privilege.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from app.control.rollout_settings import CONTROLLER_NAME

log = structlog.get_logger("app.serve.node_priority")

# The titles Ray gives its housekeeping actor processes (children of the raylet).
HOUSEKEEPING_ACTORS = frozenset(
    {"ray::ServeController", "ray::ProxyActor", "ray::DashboardAgent", "ray::RuntimeEnvAgent"}
)
# Ray's daemons started beside the raylet: an executable, or a script of the ray package.
HOUSEKEEPING_DAEMONS = (
    "/ray/core/src/ray/gcs/gcs_server",
    "/ray/_private/log_monitor.py",
    "/ray/dashboard/dashboard.py",
    "/ray/autoscaler/_private/monitor.py",
)
REAPPLY_S = 30.0  # a restarted controller or agent is caught on the next pass


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    argv: tuple[str, ...]

    @property
    def title(self) -> str:
        return self.argv[0] if self.argv else ""

    @property
    def actor(self) -> str:
        """The title without the method it is running: Ray titles a worker
        ``ray::Class.method`` during a call (the Serve controller nearly always has a
        long poll in flight) and ``ray::Class`` between calls."""
        head, dot, method = self.title.rpartition(".")
        return head if dot and head.startswith("ray::") and method.isidentifier() else self.title

    @property
    def daemon(self) -> str | None:
        """The executable or script of Ray's daemon this process runs, if it is one (the
        executable is argv[0]; a script runs as "python [-u] .../script.py ...")."""
        return next((a for a in self.argv[:3] if a.endswith(HOUSEKEEPING_DAEMONS)), None)

    @property
    def label(self) -> str:
        """The actor's title, or the daemon's executable or script name."""
        daemon = self.daemon
        return f"{os.path.basename(daemon) if daemon else self.actor}[{self.pid}]"


def read_processes(proc: Path = Path("/proc")) -> list[Process]:
    """Every process ``proc`` lists with its parent and arguments; ones that vanish or
    cannot be read while scanning are skipped."""
    out = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) < 2:
            continue
        args = tuple(a.decode(errors="replace") for a in argv if a)
        out.append(Process(int(entry.name), int(fields[1]), args))
    return out


def housekeeping(processes: list[Process], raylet_pid: int, app_name: str) -> list[Process]:
    """The housekeeping processes of the node whose raylet is ``raylet_pid``."""
    by_pid = {p.pid: p for p in processes}
    raylet = by_pid.get(raylet_pid)
    if raylet is None:
        return []
    actors = HOUSEKEEPING_ACTORS | {f"ray::ServeReplica:{app_name}:{CONTROLLER_NAME}"}
    return [
        p
        for p in processes
        if (p.ppid == raylet_pid and p.actor in actors)
        or (p.ppid == raylet.ppid and p.pid != raylet_pid and p.daemon is not None)
    ]


Renice = Callable[[int, int], bool]


def _renice(pid: int, niceness: int) -> bool:
    """Raise the nice value of every thread of ``pid`` to ``niceness`` (on Linux it is
    per thread: the GCS's and the agents' work runs off their main threads, the Serve
    controller's on its actor loop's thread). False if none was below it."""
    changed = False
    for tid in (int(t) for t in os.listdir(f"/proc/{pid}/task")):
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
                changed = True
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    return changed


def lower_housekeeping(
    niceness: int,
    *,
    app_name: str,
    raylet_pid: int | None = None,
    proc: Path = Path("/proc"),
    renice: Renice = _renice,
) -> list[str]:
    """Raise the nice value of this node's housekeeping processes to ``niceness``.

    ``raylet_pid`` defaults to this process's parent (a Serve replica is the raylet's
    child). Returns the labels of the processes changed on this pass."""
    if niceness <= 0:
        return []
    raylet = os.getppid() if raylet_pid is None else raylet_pid
    changed = []
    for p in housekeeping(read_processes(proc), raylet, app_name):
        try:
            if renice(p.pid, niceness):
                changed.append(p.label)
        except OSError as exc:  # gone, or not ours to change
            log.warning("housekeeping_renice_failed", pid=p.pid, error=type(exc).__name__)
    return changed


def keep_housekeeping_low(niceness: int, *, app_name: str) -> threading.Thread | None:
    """Lower this node's housekeeping now and again every ``REAPPLY_S`` on a daemon thread
    (a restarted controller starts at the raylet's nice value). None when turned off."""
    if niceness <= 0:
        return None

    def run() -> None:
        while True:
            try:
                changed = lower_housekeeping(niceness, app_name=app_name)
            except Exception as exc:  # an odd /proc entry must not end the thread
                log.warning("housekeeping_niceness_failed", error=f"{type(exc).__name__}: {exc}")
            else:
                if changed:
                    log.info("housekeeping_niceness", niceness=niceness, processes=changed)
            time.sleep(REAPPLY_S)

    thread = threading.Thread(target=run, name="housekeeping-niceness", daemon=True)
    thread.start()
    return thread
