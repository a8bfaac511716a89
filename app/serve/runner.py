"""Start Ray and the Serve application, wait for readiness, shut down cleanly.

Shared by ``cnnlstm serve`` and the integration tests, so the tests exercise exactly the
path a user runs.
"""

from __future__ import annotations

import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ray
import structlog
from ray import serve

from app.config import ServiceConfig
from app.config.env import Settings
from app.serve.build import build_from_config
from app.serve.node_fit import fit_to_node, required_cpus
from app.serve.options import http_options
from app.serve.serve_env import custom_resources_needed, serve_env_vars

log = structlog.get_logger("app.serve.runner")


def apply_serve_env(config: ServiceConfig) -> None:
    """Serve reads some settings from the environment at import, in every Ray process:
    put them where a local Ray's processes inherit them (an explicit value wins)."""
    for name, value in serve_env_vars(config).items():
        os.environ.setdefault(name, value)


@dataclass(frozen=True)
class RayStart:
    how: str  # how it connected, for the terminal
    config: ServiceConfig  # the config to deploy: on a local Ray, fitted to its one node


def start_ray(
    settings: Settings, config: ServiceConfig, *, local_cpus: int | None = None
) -> RayStart:
    """Join ``RAY_ADDRESS`` if set to a cluster; with ``auto``, join the cluster on this
    machine if there is one, else start a local one, and cap the predictor's autoscaling
    at the replicas that one node holds (:mod:`app.serve.node_fit`)."""
    if ray.is_initialized():
        return RayStart("already", config)
    metrics_port = config.metrics.prometheus_exporter.port
    address = settings.RAY_ADDRESS
    if address not in ("auto", "local", ""):
        ray.init(address=address, include_dashboard=False)
        return RayStart(f"joined {address}", config)
    if address == "auto":
        try:
            ray.init(address="auto", include_dashboard=False)
            return RayStart("joined the local cluster", config)
        except ConnectionError:
            pass
    apply_serve_env(config)
    # Logical CPUs are scheduling tokens: size them to fit the app's minimum, at least
    # the real core count. The autoscaling maxima are then capped at what fits (below).
    cpus = local_cpus or max(os.cpu_count() or 1, int(required_cpus(config) + 1.5))
    # Deployments pinned with custom resources (serving.gateway.ray_resources, ...) are
    # placed only where those are offered: this one node offers all of them, so the
    # production config still starts on one machine.
    custom = custom_resources_needed(config)
    ray.init(
        address="local",
        num_cpus=cpus,
        resources=custom or None,
        include_dashboard=False,
        _metrics_export_port=metrics_port if config.metrics.prometheus_exporter.enabled else None,
    )
    offered = "".join(f", {name}={amount:g}" for name, amount in sorted(custom.items()))
    how = f"started a local Ray ({cpus} logical CPUs{offered})"
    fitted, capped = fit_to_node(config, settings, ray.cluster_resources())
    return RayStart(f"{how}; {capped}" if capped else how, fitted)


def deploy(config: ServiceConfig, settings: Settings, *, blocking: bool = False) -> None:
    tls = config.network_security.tls.enabled
    serve.start(http_options=http_options(config, tls))
    serve.run(
        build_from_config(config, settings),
        name=config.serving.app_name,
        route_prefix=config.serving.route_prefix,
        blocking=blocking,
    )


def base_url(config: ServiceConfig, host: str = "127.0.0.1") -> str:
    scheme = "https" if config.network_security.tls.enabled else "http"
    return f"{scheme}://{host}:{config.serving.http_port}"


def ssl_context(ca_file: Path | None) -> ssl.SSLContext | bool:
    if ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(ca_file))


@dataclass
class ReadyInfo:
    url: str
    body: dict[str, Any]
    waited_s: float


def wait_ready(url: str, *, verify: ssl.SSLContext | bool, timeout_s: float) -> ReadyInfo:
    """Poll ``/ready`` until 200; raise TimeoutError with the last answer if it never is."""
    start = time.monotonic()
    last = "no answer"
    with httpx.Client(verify=verify, timeout=5.0) as client:
        while time.monotonic() - start < timeout_s:
            try:
                r = client.get(f"{url}/ready")
                if r.status_code == 200:
                    return ReadyInfo(url, r.json(), time.monotonic() - start)
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.5)
    raise TimeoutError(f"{url}/ready did not answer 200 within {timeout_s:.0f}s (last: {last})")


def shutdown() -> None:
    try:
        serve.shutdown()
    finally:
        ray.shutdown()
