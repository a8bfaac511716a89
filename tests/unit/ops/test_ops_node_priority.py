"""Which of a node's processes the gateway lowers, and that lowering only ever raises nice.

A fake ``/proc`` tree laid out as a local Ray session is (``ps -eo pid,ppid,args`` on a
``cnnlstm serve`` stack), and real processes for the priority itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.serve.node_priority import housekeeping, lower_housekeeping, read_processes

PY = "/srv/venv/bin/python"
RAY = "/srv/venv/lib/python3.11/site-packages/ray"
DRIVER, GCS, RAYLET = 100, 101, 105
OTHER_RAYLET = 205  # a second raylet on the same machine (the multi-node tests)

# pid -> (ppid, argv, comm)
TREE: dict[int, tuple[int, list[str], str]] = {
    DRIVER: (1, [PY, "cnnlstm", "serve", "--demo"], "cnnlstm"),
    GCS: (DRIVER, [f"{RAY}/core/src/ray/gcs/gcs_server", "--log_dir=/tmp/x"], "gcs_server"),
    102: (DRIVER, [PY, "-u", f"{RAY}/autoscaler/_private/monitor.py", "--logs-dir=/x"], "python"),
    103: (DRIVER, [PY, f"{RAY}/dashboard/dashboard.py", "--host=127.0.0.1"], "python"),
    104: (DRIVER, [PY, "-u", f"{RAY}/_private/log_monitor.py", "--session-dir=/x"], "python"),
    RAYLET: (DRIVER, [f"{RAY}/core/src/ray/raylet/raylet", "--raylet_socket_name=/x"], "raylet"),
    # Started by the same driver but not Ray's: the bench's generator and its peer server.
    106: (DRIVER, [PY, "-m", "app.bench.sender", "--rate", "400"], "python"),
    107: (DRIVER, [PY, "-m", "app.bench.baseline", "--port", "9000"], "python"),
    110: (RAYLET, ["ray::DashboardAgent", "", ""], "ray::DashboardAg"),
    111: (RAYLET, ["ray::RuntimeEnvAgent", ""], "ray::RuntimeEnvA"),
    # Ray titles a worker "ray::Class.method" while a call runs (the controller nearly
    # always has a long poll in flight).
    112: (RAYLET, ["ray::ServeController.listen_for_change", ""], "ray::ServeContro"),
    113: (RAYLET, ["ray::ProxyActor", ""], "ray::ProxyActor"),
    114: (RAYLET, ["ray::ServeReplica:cnnlstm:rollout_controller", ""], "ray::ServeRepli"),
    115: (RAYLET, ["ray::ServeReplica:cnnlstm:gateway.handle_request", ""], "ray::ServeRepli"),
    116: (RAYLET, ["ray::ServeReplica:cnnlstm:cnn_lstm_predictor", ""], "ray::ServeRepli"),
    117: (RAYLET, ["ray::IDLE", ""], "ray::IDLE"),
    118: (RAYLET, ["ray::ServeReplica:other:rollout_controller", ""], "ray::ServeRepli"),
    # The other node's housekeeping is its own gateway's to lower.
    OTHER_RAYLET: (DRIVER, [f"{RAY}/core/src/ray/raylet/raylet", "--node=2"], "raylet"),
    210: (OTHER_RAYLET, ["ray::DashboardAgent", ""], "ray::DashboardAg"),
    211: (OTHER_RAYLET, ["ray::ServeReplica:cnnlstm:gateway", ""], "ray::ServeRepli"),
}
HOUSEKEEPING = {GCS, 102, 103, 104, 110, 111, 112, 113, 114}


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    for pid, (ppid, argv, comm) in TREE.items():
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0\n")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    # What a live /proc also holds: other entries, a process that exits mid-scan, a kernel
    # thread with no arguments, a name with spaces and parentheses.
    (tmp_path / "self").mkdir()
    (tmp_path / "999").mkdir()
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "stat").write_text("3 (kworker/0:0) I 2 0 0 0 -1\n")
    (tmp_path / "3" / "cmdline").write_bytes(b"")
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "stat").write_text("7 (a) b (c) S 1 7 7 0 -1\n")
    (tmp_path / "7" / "cmdline").write_bytes(b"a) b (c\0")
    return tmp_path


def test_the_scan_reads_parents_and_arguments_and_skips_what_it_cannot_read(proc: Path) -> None:
    by_pid = {p.pid: p for p in read_processes(proc)}
    assert set(by_pid) == set(TREE) | {3, 7}
    assert by_pid[7].ppid == 1
    assert by_pid[7].argv == ("a) b (c",)
    assert by_pid[3].argv == ()
    assert by_pid[3].title == ""
    assert by_pid[112].title == "ray::ServeController.listen_for_change"
    assert by_pid[112].actor == "ray::ServeController"
    assert by_pid[114].actor == "ray::ServeReplica:cnnlstm:rollout_controller"
    assert by_pid[GCS].actor == by_pid[GCS].title  # not an actor: left as it is
    assert read_processes(proc / "missing") == []


def test_only_this_nodes_ray_housekeeping_is_chosen(proc: Path) -> None:
    chosen = housekeeping(read_processes(proc), RAYLET, "cnnlstm")
    assert {p.pid for p in chosen} == HOUSEKEEPING
    # Never: the raylet (its workers would inherit), serving replicas, idle workers, the
    # driver and what it started, another app's controller, another node's processes.
    assert housekeeping(read_processes(proc), 4242, "cnnlstm") == []


def test_lowering_reports_what_changed_and_goes_on_past_a_process_that_is_gone(
    proc: Path,
) -> None:
    asked: list[tuple[int, int]] = []

    def renice(pid: int, niceness: int) -> bool:
        asked.append((pid, niceness))
        if pid == 113:
            raise ProcessLookupError(pid)
        return pid != 112  # already that low

    changed = lower_housekeeping(
        10, app_name="cnnlstm", raylet_pid=RAYLET, proc=proc, renice=renice
    )
    assert sorted(pid for pid, _ in asked) == sorted(HOUSEKEEPING)
    assert {n for _, n in asked} == {10}
    assert "gcs_server[101]" in changed
    assert "log_monitor.py[104]" in changed
    assert "ray::ServeReplica:cnnlstm:rollout_controller[114]" in changed
    assert not any("[112]" in c or "[113]" in c for c in changed)
    assert len(changed) == len(HOUSEKEEPING) - 2


def test_niceness_zero_leaves_every_process_alone(proc: Path) -> None:
    def renice(pid: int, niceness: int) -> bool:
        raise AssertionError("nothing may be reniced")

    assert (
        lower_housekeeping(0, app_name="cnnlstm", raylet_pid=RAYLET, proc=proc, renice=renice) == []
    )


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    # Two threads: Linux keeps a nice value per thread.
    code = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start()"
    p = subprocess.Popen([sys.executable, "-c", code])
    while len(os.listdir(f"/proc/{p.pid}/task")) < 2:
        time.sleep(0.01)
    yield p
    p.kill()
    p.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_real_process_is_raised_once_and_never_lowered(
    child: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    # This process plays the raylet; its child is titled as Serve's controller is.
    me = os.getpid()
    fake = tmp_path / str(child.pid)
    fake.mkdir()
    (fake / "stat").write_text(f"{child.pid} (python) S {me} 0 0\n")
    (fake / "cmdline").write_bytes(b"ray::ServeController\0")
    (tmp_path / str(me)).mkdir()
    (tmp_path / str(me) / "stat").write_text(f"{me} (pytest) R 1 0 0\n")
    (tmp_path / str(me) / "cmdline").write_bytes(b"raylet\0")

    def lower(niceness: int) -> list[str]:
        return lower_housekeeping(niceness, app_name="cnnlstm", raylet_pid=me, proc=tmp_path)

    mine = os.getpriority(os.PRIO_PROCESS, me)
    base = os.getpriority(os.PRIO_PROCESS, child.pid)
    if base > 16:
        pytest.skip(f"the test runs at nice {base}: no room to raise it")

    def threads() -> set[int]:
        tids = [int(t) for t in os.listdir(f"/proc/{child.pid}/task")]
        return {os.getpriority(os.PRIO_PROCESS, tid) for tid in tids}

    assert lower(base + 3) == [f"ray::ServeController[{child.pid}]"]
    assert threads() == {base + 3}
    assert lower(base + 3) == []  # already there
    assert lower(base + 1) == []  # lowering it back would need privilege, and is never tried
    assert threads() == {base + 3}
    assert os.getpriority(os.PRIO_PROCESS, me) == mine  # the "raylet" itself is never touched
