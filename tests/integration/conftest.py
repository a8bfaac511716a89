"""A real local Ray cluster and the real Serve app over real HTTPS, once per session.

The session starts the app against an EMPTY registry (the predictor waits for its model),
records what ``/ready`` says then, publishes a model artifact, and waits for ``/ready``
200: the readiness test reads those observations instead of paying for a second start.

Blue/green runs on second-scale intervals here (``test_rollout.py`` drives whole rollouts
against this same app), alerts go to a local webhook receiver, and version ``2.1.0`` has
fault injection on (10 % of its calls fail) for the rollback test. Other versions, and so
every other test, are unaffected.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.bench.targets import free_port
from app.config import ServiceConfig
from app.security.dev_certs import ensure_dev_certs
from model.common.refs import ModelRef
from tests.support.live import LiveTarget
from tests.support.security_app import write_security_material
from tests.support.webhook import WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.integration

DRILL_PROPERTY = "drill"  # a fault drill's line (test_fault_drills.py), kept for the summary


@pytest.fixture
def drill_line(record_property: Callable[[str, object], None]) -> Callable[[str], None]:
    """Print a fault drill's line and keep it for the run's summary."""

    def emit(line: str) -> None:
        print(line)
        record_property(DRILL_PROPERTY, line)

    return emit


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Every fault drill's line, passed, failed or xfailed: CI runs without ``-s``."""
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == DRILL_PROPERTY
    ]
    if lines:
        terminalreporter.section("fault drills")
        for line in lines:
            terminalreporter.write_line(str(line))


@dataclass
class ServeStack:
    base_url: str
    ca_file: Path
    config: ServiceConfig
    root: Path
    registry_root: Path
    log_dir: Path
    ray_log_dir: Path
    rsa_private_key_path: Path
    ref: ModelRef
    ready_before_model: int | None = None
    ready_before_body: dict[str, Any] = field(default_factory=dict)
    ready_after_s: float = 0.0
    alerts: WebhookReceiver | None = None
    proxy_url: str = ""

    def client(self, **kwargs: Any) -> httpx.Client:
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(base_url=self.base_url, verify=ctx, timeout=30.0, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.AsyncClient(base_url=self.base_url, verify=ctx, timeout=60.0, **kwargs)


FAULTY_VERSION = "2.1.0"  # fails 10 % of its predictor calls (serving.fault_injection)


def _stack_config(root: Path, certs: Any, webhook_url: str) -> tuple[ServiceConfig, Path]:
    port = free_port()
    log_dir = root / "logs"
    overrides = {
        "resources": {"num_cpus": 0.5, "memory": 0, "num_gpus": 0},
        "model_registry": {
            "path": str(root / "models"),
            "wait_for_model_s": 300,
            "sync_interval_s": 1,
        },
        "blue_green_deployment": {
            "traffic_shift_interval_s": 2,
            "health_check_duration_s": 2,
            "traffic_steps_pct": [25, 50, 100],
            "min_samples": 10,
            "preload_timeout_s": 120,
            "control_interval_s": 0.25,
            "predictor_poll_interval_s": 0.5,
            "gateway_poll_interval_s": 0.25,
            "report_interval_s": 0.25,
            # No shadow phase unless a test asks for one (rollout start --shadow-s): the
            # traffic-step tests roll out greens that differ from blue on purpose.
            "shadow": {"duration_s": 0, "sample_pct": 100, "min_samples": 20},
        },
        "monitoring_integration": {"alerting": {"webhook_url": webhook_url}},
        "logging": {"directory": str(log_dir), "level": "INFO", "format": "json"},
        "serving": {
            "autoscaling_enabled": False,
            "http_port": port,
            "proxy_port": free_port(),
            "http_host": "127.0.0.1",
            # A direct-ingress gateway keeps its port this long when it stops (30 s by
            # default, for load balancers). Tests have none: 30 s per app teardown.
            "drain_period_s": 1,
            "gateway": {"num_replicas": 1, "num_cpus": 0, "max_ongoing_requests": 1000},
            "fault_injection": {f"cnn_lstm:{FAULTY_VERSION}": 0.1},
        },
        # metrics_interval_s becomes Serve's autoscaling metric push interval for the whole
        # session (apply_serve_env): short, so test_autoscaling's app reacts in seconds.
        "autoscaling": {"min_replicas": 1, "max_replicas": 1, "metrics_interval_s": 0.5},
        "network_security": {"limits": {"max_body_bytes": 65536}},
        # The functional tests run on a loaded 2-core box beside their own clients: shed on
        # event-loop lag only when it is far past anything a working stack shows there (the
        # overload drill drives it well beyond this).
        "batching": {"max_loop_lag_ms": 250, "keep_warm_ms": 20},  # as the local profile
    }
    material = write_security_material(root, cert=certs.cert, key=certs.key, overrides=overrides)
    return material.config, material.rsa_private_key_path


@pytest.fixture(scope="session")
def alert_webhook() -> Iterator[WebhookReceiver]:
    """Where the stack's rollout controller sends its alerts."""
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def serve_stack(
    tmp_path_factory: pytest.TempPathFactory, alert_webhook: WebhookReceiver
) -> Iterator[ServeStack]:
    import ray
    from ray import serve

    from app.config.env import Settings
    from app.serve.build import build_from_config
    from app.serve.options import http_options
    from model.export import make_random_artifact

    root = tmp_path_factory.mktemp("stack")
    certs = ensure_dev_certs(root / "certs")
    config, rsa_key = _stack_config(root, certs, alert_webhook.url)
    registry_root = Path(config.model_registry.path)
    registry_root.mkdir(parents=True)
    from app.serve.runner import apply_serve_env

    apply_serve_env(config)  # the same Serve environment `cnnlstm serve` uses
    ray.init(
        address="local",
        num_cpus=8,
        include_dashboard=False,
    )
    ray_log_dir = Path(ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"
    serve.start(http_options=http_options(config))
    settings = Settings(DEVICE="cpu", MODEL_REGISTRY_PATH=registry_root)
    deploy_error: list[BaseException] = []

    def _deploy() -> None:
        try:
            serve.run(build_from_config(config, settings), name="cnnlstm", route_prefix="/")
        except BaseException as exc:  # surfaced by the fixture below
            deploy_error.append(exc)

    thread = threading.Thread(target=_deploy, daemon=True)
    thread.start()
    scheme = "https"
    base_url = f"{scheme}://127.0.0.1:{config.serving.http_port}"
    stack = ServeStack(
        base_url=base_url,
        ca_file=certs.ca,
        config=config,
        root=root,
        registry_root=registry_root,
        log_dir=Path(config.logging.directory or root / "logs"),
        ray_log_dir=ray_log_dir,
        rsa_private_key_path=rsa_key,
        ref=ModelRef("", "", ""),
        alerts=alert_webhook,
        proxy_url=f"{scheme}://127.0.0.1:{config.serving.proxy_port}",
    )
    try:
        # 1. The gateway answers before the predictor has a model: /ready must say 503.
        deadline = time.monotonic() + 180
        with stack.client() as client:
            while time.monotonic() < deadline and not deploy_error:
                try:
                    r = client.get("/ready")
                except httpx.HTTPError:
                    r = None
                # Until the gateway is up, the Serve proxy itself answers 404/503 in text.
                if r is not None and r.headers.get("content-type", "").startswith(
                    "application/json"
                ):
                    stack.ready_before_model = r.status_code
                    stack.ready_before_body = r.json()
                    break
                time.sleep(0.5)
        if deploy_error:
            raise deploy_error[0]
        # 2. Publish a model; the waiting predictor loads, validates and warms it.
        stack.ref = make_random_artifact(registry_root, version="1.0.0", seed=7)
        t0 = time.monotonic()
        thread.join(timeout=240)
        if deploy_error:
            raise deploy_error[0]
        with stack.client() as client:
            while time.monotonic() - t0 < 240:
                if client.get("/ready").status_code == 200:
                    break
                time.sleep(0.25)
            else:
                raise TimeoutError("/ready never became 200")
        stack.ready_after_s = time.monotonic() - t0
        yield stack
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def live_target(serve_stack: ServeStack) -> LiveTarget:
    """The security attack suite's view of the real Serve app."""
    from tests.support.live import columnar_bars

    return LiveTarget(
        base_url=serve_stack.base_url,
        ca_file=serve_stack.ca_file,
        config=serve_stack.config,
        log_paths=[serve_stack.log_dir, serve_stack.ray_log_dir],
        rsa_private_key_path=serve_stack.rsa_private_key_path,
        predict_body=columnar_bars(),
    )
