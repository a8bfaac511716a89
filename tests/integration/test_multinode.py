"""The Ray-native path on a real two-node cluster on one machine, and a worker node lost.

A head node (``ray start --head``, offering ``cnnlstm_gateway``) and a worker node
(``ray start --address``, offering ``cnnlstm_predictor``) run as subprocesses with the
environment ``cnnlstm config render-env`` prints, Ray token auth on for all of them. The
Serve YAML comes from the project's own generator and goes in with ``serve deploy``; the
gateway is pinned to the head, the predictor to the worker. Then: ``/ready`` over HTTPS on
:8000, predictions equal to the torch runtime's, the predictor replica on the worker;
the worker stopped under traffic (what the clients get), restarted (how long until
predictions succeed again by themselves).

Isolation from the session's own local Ray (``conftest.py``) and anything else on the
machine: own ports, own ``--temp-dir``, and every process we start carries a marker in its
environment; teardown stops the nodes through their ``ray start --block`` processes, then
kills whatever still carries the marker, by PID. Never ``ray stop`` (it kills every Ray on
the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from app.bench.targets import free_port
from app.cli.serve_cmd import sample_request
from app.config import ServiceConfig, load_config_file
from app.security.api_keys import ApiKeyStore
from app.security.dev_certs import ensure_dev_certs
from app.serve.serve_yaml import render_serve_config
from model.common.features import compute_features
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from tests.support.security_app import write_security_material

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HTTP_PORT = 8000  # what the issue asks for: the production port, as `cnnlstm serve` serves
REQUEST_TIMEOUT_S = 5.0  # the gateway's own deadline (serving.request_timeout_s)
HUNG_SLACK_S = 3.0  # an answer later than the gateway's timeout plus this "hung"
RECOVERY_BOUND_S = 180.0
WORKER_DRAIN_S = 10  # RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S of the worker (Ray: 30)
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
PREDICTOR = "cnn_lstm_predictor"


def _port_taken(port: int) -> bool:
    for host in ("127.0.0.1", "0.0.0.0"):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return True
    return False


def _pids_with_marker(marker: str) -> list[int]:
    """Processes of this user whose environment carries ``marker`` (ours, and only ours)."""
    needle = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


@dataclass
class Cluster:
    """Two Ray nodes as ``ray start --block`` subprocesses, and the clients to reach them."""

    root: Path
    temp_dir: Path
    env: dict[str, str]
    marker: str
    token: str
    gcs_port: int
    dashboard_port: int
    head: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.root / f"{name}-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            return subprocess.Popen(
                argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one
            )

    def _node_ports(self) -> list[str]:
        return [
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]

    def start_head(self) -> None:
        self.head = self._spawn(
            "head",
            [
                str(BIN / "ray"), "start", "--head", "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={self.gcs_port}",
                "--num-cpus=2",
                "--resources=" + json.dumps({"cnnlstm_gateway": 1}),
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
                f"--temp-dir={self.temp_dir}",
                "--disable-usage-stats",
                *self._node_ports(),
            ],
        )  # fmt: skip

    def start_worker(self) -> None:
        self.worker = self._spawn(
            "worker",
            [
                str(BIN / "ray"), "start", "--block",
                f"--address=127.0.0.1:{self.gcs_port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=2",
                "--resources=" + json.dumps({"cnnlstm_predictor": 1}),
                f"--temp-dir={self.temp_dir}",
                "--disable-usage-stats",
                *self._node_ports(),
            ],
        )  # fmt: skip

    @staticmethod
    def stop_node(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
        """SIGTERM the node's ``ray start --block`` (Ray drains, then stops its processes);
        SIGKILL its process group if it takes longer than ``timeout_s``."""
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def cli(self, *argv: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / argv[0]), *argv[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def api(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        r = httpx.get(f"{self.dashboard}{path}", headers=headers, timeout=10.0)
        r.raise_for_status()
        return r.json()

    def alive_nodes(self) -> list[dict[str, Any]]:
        rows = self.api("/api/v0/nodes?limit=100")["data"]["result"]["result"]
        return [n for n in rows if n["state"] == "ALIVE"]

    def node_of(self, resource: str) -> str | None:
        for node in self.alive_nodes():
            if resource in (node.get("resources_total") or {}):
                return str(node["node_id"])
        return None

    def replicas(self, deployment: str) -> list[dict[str, Any]]:
        details = self.api("/api/serve/applications/")
        app = details.get("applications", {}).get("cnnlstm", {})
        deployments = app.get("deployments", {})
        return list(deployments.get(deployment, {}).get("replicas", []))

    def cleanup(self) -> None:
        self.stop_node(self.worker, timeout_s=WORKER_DRAIN_S + 30)
        self.stop_node(self.head, timeout_s=60)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = _pids_with_marker(self.marker)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            if pids and sig == signal.SIGTERM:
                time.sleep(3)
        left = _pids_with_marker(self.marker)
        assert not left, f"processes of the test cluster still running: {left}"
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _wait(what: str, check: Any, timeout_s: float, every_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # still coming up: keep polling
            last = exc
        else:
            if last:
                return last
        time.sleep(every_s)
    raise TimeoutError(f"{what} not within {timeout_s:.0f}s (last: {last!r})")


def _node_env(config_file: Path, registry: Path, marker: str, token: str) -> dict[str, str]:
    """Our environment without anything Ray or spec 8 from this session, plus what
    ``cnnlstm config render-env`` prints for the config, Ray token auth and the marker."""
    spec8 = {"MODEL_REGISTRY_PATH", "LOG_LEVEL", "DEVICE", "CNNLSTM_CONFIG", "MAX_BATCH_SIZE"}
    spec8 |= {"BATCH_TIMEOUT_MS", "CACHE_TTL_SECONDS"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k not in spec8}
    rendered = subprocess.run(
        [str(BIN / "cnnlstm"), "--config", str(config_file), "config", "render-env"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    script = rendered + "env -0"
    dumped = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    for item in dumped.split(b"\0"):
        name, _, value = item.decode().partition("=")
        if name.startswith("RAY_"):
            env[name] = value
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    env.update(
        {
            "RAY_AUTH_MODE": "token",  # as on KubeRay; the CLI sends the same token
            "RAY_AUTH_TOKEN": token,
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": str(WORKER_DRAIN_S),
            "RAY_USAGE_STATS_ENABLED": "0",
            "DEVICE": "cpu",
            "MODEL_REGISTRY_PATH": str(registry),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "CNNLSTM_MULTINODE_MARKER": marker,
        }
    )
    return env


def _write_config(root: Path) -> tuple[Path, ServiceConfig, Path]:
    certs = ensure_dev_certs(root / "certs")
    overrides = {
        "resources": {"num_cpus": 0.5, "memory": 0, "num_gpus": 0},
        "model_registry": {"path": str(root / "models"), "wait_for_model_s": 300},
        "logging": {"directory": str(root / "logs"), "level": "INFO", "format": "json"},
        "serving": {
            "autoscaling_enabled": False,
            "http_port": HTTP_PORT,
            "http_host": "127.0.0.1",
            "proxy_port": free_port(),
            # Both nodes share one IP here: one proxy (a second would want the same port).
            "proxy_location": "HeadOnly",
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "drain_period_s": 1,
            "gateway": {
                "num_replicas": 1,
                "num_cpus": 0,
                "ray_resources": {"cnnlstm_gateway": 1},
            },
            "predictor_ray_resources": {"cnnlstm_predictor": 1},
        },
        "autoscaling": {"min_replicas": 1, "max_replicas": 1, "metrics_interval_s": 1},
    }
    material = write_security_material(root, cert=certs.cert, key=certs.key, overrides=overrides)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(material.config.model_dump(mode="json")), encoding="utf-8")
    config = load_config_file(path)  # what the replicas will read
    assert config.serving.predictor_ray_resources == {"cnnlstm_predictor": 1}
    return path, config, certs.ca


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    if _port_taken(HTTP_PORT):
        pytest.skip(f"port {HTTP_PORT} is in use on this machine: the test serves on it")
    if not (BIN / "ray").exists() or not (BIN / "serve").exists():
        pytest.skip("the ray and serve executables are not in this environment")
    # Unix socket paths live under the temp dir: keep it short (pytest's paths are long).
    temp_dir = Path(tempfile.mkdtemp(prefix="cnnmn-", dir="/tmp"))
    marker = f"cnnlstm-multinode-{secrets.token_hex(8)}"
    token = secrets.token_hex(32)
    c = Cluster(
        root=tmp_path,
        temp_dir=temp_dir,
        env={},
        marker=marker,
        token=token,
        gcs_port=free_port(),
        dashboard_port=free_port(),
    )
    try:
        yield c
    finally:
        c.cleanup()


@dataclass
class Outcome:
    sent: float
    took: float
    status: str  # "200", "503", ..., or an exception name


class Traffic:
    """Clients sending /predict back to back, each answer recorded with its send time."""

    def __init__(self, url: str, ca: Path, key: str, body: dict[str, Any], clients: int = 2):
        self.url, self.key, self.body = url, key, body
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.outcomes: list[Outcome] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        # Far past the gateway's timeout: a request the gateway lets hang shows as one.
        with httpx.Client(verify=self.ctx, timeout=REQUEST_TIMEOUT_S + 30) as client:
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    r = client.post(
                        f"{self.url}/predict", json=self.body, headers={"X-API-Key": self.key}
                    )
                    status = str(r.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with self.lock:
                    self.outcomes.append(Outcome(t0, time.monotonic() - t0, status))
                time.sleep(0.1)

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=REQUEST_TIMEOUT_S + 40)

    def first_ok_after(self, t: float) -> Outcome | None:
        """The first request sent after ``t`` that was answered 200."""
        with self.lock:
            ok = [o for o in self.outcomes if o.sent >= t and o.status == "200"]
        return min(ok, key=lambda o: o.sent) if ok else None

    def between(self, start: float, end: float) -> list[Outcome]:
        with self.lock:
            return [o for o in self.outcomes if start <= o.sent < end]


def _expected(
    registry: Path, ref: ModelRef, body: dict[str, Any], numerics: str, engine: str
) -> Any:
    from model.runtime import load_model

    bars = np.stack(
        [np.asarray(body[c], dtype=np.float64) for c in ("open", "high", "low", "close", "volume")],
        axis=1,
    )
    # The same choices as the predictor: with "auto" a lone row runs on ONNX Runtime on
    # every CPU measured (2x faster than torch at 1 row), as it does in the predictor.
    model = load_model(ModelRegistry(registry), ref, device="cpu", numerics=numerics, engine=engine)
    return model.predict(compute_features(bars)[None, ...])[0]


def test_two_nodes_serve_https_and_recover_when_the_predictor_node_returns(
    cluster: Cluster,
) -> None:
    from model.export import make_random_artifact

    root = cluster.root
    config_file, config, ca = _write_config(root)
    registry = Path(config.model_registry.path)
    registry.mkdir(parents=True)
    ref = make_random_artifact(registry, version="1.0.0", seed=7)
    _, api_key = ApiKeyStore(config.security.authentication.api_key_store_path).create(
        owner="multinode", scopes=["model:predict"]
    )
    cluster.env = _node_env(config_file, registry, cluster.marker, cluster.token)

    # 1. Two nodes: the head offers cnnlstm_gateway, the worker cnnlstm_predictor.
    cluster.start_head()
    _wait("the head's dashboard", lambda: cluster.api("/api/version"), 120)
    cluster.start_worker()
    _wait("the worker node", lambda: cluster.node_of("cnnlstm_predictor"), 120)
    head_id = cluster.node_of("cnnlstm_gateway")
    worker_id = cluster.node_of("cnnlstm_predictor")
    assert head_id
    assert worker_id
    assert head_id != worker_id

    # 2. The project's own Serve YAML, deployed the Ray-native way.
    serve_yaml = root / "serve.yaml"
    serve_yaml.write_text(
        render_serve_config(
            config, config_path=str(config_file), device="cpu", command="cnnlstm test"
        ),
        encoding="utf-8",
    )
    assert "config render-env" in serve_yaml.read_text(encoding="utf-8").splitlines()[1]
    deployed = cluster.cli("serve", "deploy", str(serve_yaml), "--address", cluster.dashboard)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    # 3. HTTPS on :8000 from the gateway replica itself (direct ingress), model ready.
    url = f"https://127.0.0.1:{HTTP_PORT}"
    ctx = ssl.create_default_context(cafile=str(ca))
    t_deploy = time.monotonic()
    _wait(
        "/ready 200 on :8000",
        lambda: httpx.get(f"{url}/ready", verify=ctx, timeout=5).status_code == 200,
        300,
    )
    print(f"\n[multinode] serve deploy -> /ready 200: {time.monotonic() - t_deploy:.1f}s")

    status = cluster.cli("serve", "status", "--address", cluster.dashboard)
    assert status.returncode == 0, status.stderr
    apps = yaml.safe_load(status.stdout)["applications"]
    assert apps["cnnlstm"]["status"] == "RUNNING", status.stdout

    # 4. Correct predictions.
    body = sample_request("EURUSD", offset=2000)
    expected = _expected(
        registry, ref, body, config.serving.predictor_numerics, config.serving.predictor_engine
    )
    with httpx.Client(verify=ctx, timeout=30) as client:
        r = client.post(f"{url}/predict", json=body, headers={"X-API-Key": api_key})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["expected_return"] == pytest.approx(float(expected[0]), rel=1e-5, abs=1e-7)
    assert got["prob_up"] == pytest.approx(float(expected[1]), rel=1e-5, abs=1e-7)
    assert got["model"] == {"name": ref.name, "version": ref.version, "sha256": ref.sha256}

    # 5. Placement: the predictor on the worker, the gateway on the head.
    predictors = [p for p in cluster.replicas(PREDICTOR) if p["state"] == "RUNNING"]
    gateways = [g for g in cluster.replicas("gateway") if g["state"] == "RUNNING"]
    assert [p["node_id"] for p in predictors] == [worker_id]
    assert [g["node_id"] for g in gateways] == [head_id]

    # 6. The worker node stops under traffic, then comes back.
    with Traffic(url, ca, api_key, body) as traffic:
        time.sleep(3)
        t_stop = time.monotonic()
        cluster.stop_node(cluster.worker, timeout_s=WORKER_DRAIN_S + 60)
        t_gone = time.monotonic()
        time.sleep(10)  # the predictor has no node to run on meanwhile
        t_restart = time.monotonic()
        cluster.start_worker()
        recovered: Outcome = _wait(
            "a prediction after the worker's return",
            lambda: traffic.first_ok_after(t_restart),
            RECOVERY_BOUND_S + 60,
        )
        first_ok = recovered.sent
        _wait(
            "5 predictions in a row after the return",
            lambda: (
                [o.status for o in traffic.between(first_ok, time.monotonic())][-5:] == ["200"] * 5
            ),
            60,
            0.5,
        )
        t_end = time.monotonic()
    recovered_at = recovered.sent + recovered.took  # its answer: predictions are back

    before = traffic.between(0, t_stop)
    draining = traffic.between(t_stop, t_gone)
    down = traffic.between(t_gone, first_ok)
    after = traffic.between(first_ok, t_end)
    outage = traffic.between(t_stop, first_ok)
    counts = {
        name: dict(Counter(o.status for o in part))
        for name, part in (
            ("before_stop", before),
            ("while_draining", draining),
            ("node_gone_until_first_ok", down),
            ("after_recovery", after),
        )
    }
    slowest = max(o.took for o in traffic.between(0, t_end))
    failed = [o for o in outage if o.status != "200"]
    report = {
        "worker_stop_s": round(t_gone - t_stop, 1),
        "down_before_restart_s": round(t_restart - t_gone, 1),
        "recovery_after_restart_s": round(recovered_at - t_restart, 1),
        "recovery_after_stop_s": round(recovered_at - t_stop, 1),
        "first_failure_after_stop_s": round(min(o.sent for o in failed) - t_stop, 1)
        if failed
        else None,
        "failed_requests_during_outage": len(failed),
        "requests_during_outage": len(outage),
        "counts": counts,
        "slowest_answer_s": round(slowest, 2),
        "gateway_timeout_s": REQUEST_TIMEOUT_S,
        "worker_drain_timeout_s": WORKER_DRAIN_S,
    }
    print(f"[multinode] {json.dumps(report)}")

    assert all(o.status == "200" for o in before), counts
    assert recovered_at - t_restart <= RECOVERY_BOUND_S
    hung = [o for o in traffic.between(0, t_end) if o.took > REQUEST_TIMEOUT_S + HUNG_SLACK_S]
    assert not hung, f"answers past the gateway's timeout: {hung[:5]}"
    # Failures are answers (typed errors), never broken connections.
    assert all(o.status.isdigit() for o in outage), counts
    # Back on a new worker node, with the same model.
    new_worker = cluster.node_of("cnnlstm_predictor")
    assert new_worker
    assert new_worker != worker_id
    running = [p for p in cluster.replicas(PREDICTOR) if p["state"] == "RUNNING"]
    assert [p["node_id"] for p in running] == [new_worker]
    with httpx.Client(verify=ctx, timeout=30) as client:
        again = client.post(f"{url}/predict", json=body, headers={"X-API-Key": api_key}).json()
    assert again["expected_return"] == pytest.approx(got["expected_return"], rel=1e-6)
