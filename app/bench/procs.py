"""Resident memory and CPU time of the server processes, by process title or pid.

Ray names its worker processes with ``setproctitle`` (``ray::ServeReplica:<app>:<deployment>``,
``ray::ProxyActor``, ``ray::ServeController``), so a scan of the process table finds the
gateway and predictor replicas without asking Ray. psutil is used when importable
(portable); otherwise ``/proc`` (Linux), which is all this needs.

Beside the processes, :func:`box_sample` and :func:`box_usage` say how busy the whole
machine was (every process in ``/proc``, and ``/proc/stat``'s interrupt time): the
processes a run watches do not add up to the box. In session 18 Serve's processes and
the generator summed to ~150% of a core at 1000 req/s on this 2-core VM while the
generator fell behind, and only the box's own count could say whether the remaining
~50% was idle, kernel time charged to no process, or someone else's (it was idle).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Ray actors/agents by title; while an actor runs a method Ray appends ".<method>".
_RAY_ACTORS = ("ProxyActor", "ServeController", "DashboardAgent", "RuntimeEnvAgent")
_RAY_DAEMONS = ("raylet", "gcs_server")
# Ray's Python daemons, by script: the log monitor forwards every replica's stdout and
# stderr to the driver, a real cost when replicas log each request.
_RAY_SCRIPTS = {"log_monitor.py": "log_monitor", "dashboard.py": "dashboard"}


@dataclass(frozen=True)
class ProcSample:
    pid: int
    name: str
    rss_bytes: int
    cpu_s: float


def _psutil_sample(pid: int, name: str) -> ProcSample | None:
    import psutil

    try:
        p = psutil.Process(pid)
        with p.oneshot():
            t = p.cpu_times()
            return ProcSample(pid, name, int(p.memory_info().rss), float(t.user + t.system))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _proc_sample(pid: int, name: str) -> ProcSample | None:
    cpu_s = _task_cpu_s(_PROC / str(pid) / "stat")
    if cpu_s is None:
        return None
    try:
        status = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    rss_kb = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
    )
    return ProcSample(pid, name, rss_kb * 1024, cpu_s)


def sample(pid: int, name: str) -> ProcSample | None:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return _proc_sample(pid, name)
    return _psutil_sample(pid, name)


def peak_rss_mb_self() -> float:
    """This process's peak RSS. ``VmHWM`` belongs to the address space, so it starts
    afresh at exec; ``ru_maxrss`` would carry over the forking parent's peak on Linux."""
    try:
        for line in (_PROC / "self" / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    # setproctitle overwrites argv in place: the title is the first NUL-terminated
    # chunk, sometimes padded with spaces.
    return [a.decode(errors="replace").strip() for a in raw.split(b"\0") if a.strip()]


def label(argv: list[str], app_name: str | None = None) -> str | None:
    """What a process is, from its command line; None when it is not Serve's or Ray's."""
    if not argv:
        return None
    head = argv[0].split()[0]
    if head.startswith("ray::ServeReplica:"):
        parts = head.split(":")  # ray::ServeReplica:<app>:<deployment>[.<method>]
        if len(parts) >= 5 and (app_name is None or parts[3] == app_name):
            return f"replica:{parts[4].split('.')[0]}"
        return None
    if head.startswith("ray::"):
        name = head.removeprefix("ray::").split(".")[0]
        return name if name in _RAY_ACTORS else None
    if Path(head).name in _RAY_DAEMONS:
        return Path(head).name
    for arg in argv[1:4]:
        script = _RAY_SCRIPTS.get(Path(arg).name)
        if script and "ray" in arg:
            return script
    return None


def _parent(pid: int) -> int | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    current: int | None = pid
    for _ in range(64):  # a bound: pid reuse could in theory make a cycle
        if not current:
            return False
        if current == ancestor:
            return True
        current = _parent(current)
    return False


def serve_processes(app_name: str | None = None, *, under: int | None = None) -> dict[int, str]:
    """``{pid: label}`` for Serve replicas (of ``app_name``, if given), proxies, the
    controller and Ray's per-node daemons on this host.

    ``under``: only descendants of that pid. A Ray started by this process forks its
    daemons and workers below it, so this keeps another Ray on the same machine (a test
    suite running next to the benchmark) out of the figures.
    """
    found: dict[int, str] = {}
    if not _PROC.is_dir():
        return found
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if under is not None and not _descends_from(pid, under):
            continue
        name = label(_cmdline(pid), app_name)
        if name is not None:
            found[pid] = name
    return found


# /proc/stat's "cpu" line, in this order (older kernels stop early: missing ones are 0).
_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_INTERRUPTS = ("irq", "softirq")  # time no task is charged for


@dataclass(frozen=True)
class BoxSample:
    """The machine at one moment: each task's CPU so far (the scheduler's exact figure,
    :func:`_task_cpu_s`) and ``/proc/stat``'s tick counts, which give the interrupt
    and steal time no task carries. Its user and system counts are not used: they are
    sampled at the timer tick, and a load generator on an even schedule whose period
    divides the tick's is seen at the same phase every time (at 1000 and 2000 req/s the
    hello's run read less busy time than its own processes used)."""

    at: float  # time.monotonic()
    tasks_cpu_s: dict[int, float]
    ticks: dict[str, int]  # cumulative, all CPUs together


def box_sample(proc: Path = _PROC) -> BoxSample | None:
    """Every process's CPU so far and the machine's tick counts; None without ``/proc``."""
    try:
        line = (proc / "stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not line or line[0] != "cpu":
        return None
    values = [int(w) for w in line[1 : 1 + len(_STAT_FIELDS)]]
    values += [0] * (len(_STAT_FIELDS) - len(values))
    tasks: dict[int, float] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit() and (cpu_s := _task_cpu_s(entry / "stat")) is not None:
            tasks[int(entry.name)] = cpu_s
    return BoxSample(time.monotonic(), tasks, dict(zip(_STAT_FIELDS, values, strict=True)))


def _task_cpu_s(stat: Path) -> float | None:
    """A process's CPU so far from its ``stat`` file: utime + stime, all its threads
    (the kernel scales them to the scheduler's exact runtime); None once it is gone."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name, which may itself contain spaces.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def box_usage(
    before: BoxSample | None,
    after: BoxSample | None,
    processes: list[dict[str, object]],
    cores: int | None = None,
) -> dict[str, float] | None:
    """How busy the machine was between two samples, in % of one core like the
    per-process figures (a 2-core box is 200% when full): every process (a process
    started in between counts whole; one that ended in between is missed) plus interrupt
    time, the part of it the watched ``processes`` (:func:`usage` rows) do not account
    for, and the interrupt and steal shares."""
    if before is None or after is None or after.at <= before.at:
        return None
    per_s = 100.0 / (after.at - before.at)
    tasks = sum(cpu - before.tasks_cpu_s.get(pid, 0.0) for pid, cpu in after.tasks_cpu_s.items())
    ticks = {k: after.ticks[k] - before.ticks[k] for k in _STAT_FIELDS}
    all_ticks = sum(ticks.values())
    share = 100.0 * (cores or os.cpu_count() or 1) / all_ticks if all_ticks > 0 else 0.0
    interrupts = sum(ticks[k] for k in _INTERRUPTS) * share
    watched = sum(_pct(p.get("cpu_pct_of_core")) for p in processes)
    return {
        "busy_pct_of_core": round(tasks * per_s + interrupts, 1),
        "processes_pct_of_core": round(tasks * per_s, 1),
        "unwatched_pct_of_core": round(tasks * per_s - watched, 1),
        "interrupts_pct_of_core": round(interrupts, 1),
        "steal_pct_of_core": round(ticks["steal"] * share, 1),
    }


def _pct(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0  # None: process gone


def snapshot(pids: dict[int, str]) -> dict[int, ProcSample]:
    out = {}
    for pid, name in pids.items():
        s = sample(pid, name)
        if s is not None:
            out[pid] = s
    return out


def usage(
    before: dict[int, ProcSample], after: dict[int, ProcSample], seconds: float
) -> list[dict[str, object]]:
    """Per process: RSS at the end and CPU used in between, as % of one core."""
    rows: list[dict[str, object]] = []
    for pid, end in sorted(after.items(), key=lambda kv: (kv[1].name, kv[0])):
        start = before.get(pid)
        cpu = end.cpu_s - start.cpu_s if start else None
        rows.append(
            {
                "pid": pid,
                "name": end.name,
                "rss_mb": round(end.rss_bytes / 2**20, 1),
                "cpu_s": round(cpu, 2) if cpu is not None else None,
                "cpu_pct_of_core": round(100.0 * cpu / seconds, 1)
                if cpu is not None and seconds > 0
                else None,
            }
        )
    return rows
