"""Ctrl-C on the laptop profile under load: out in under 10 s, nothing accepted lost.

``cnnlstm --config <the local profile> serve --demo`` runs as its own process with its own
local Ray (as a newcomer runs it), a few client threads keep keep-alive connections busy
at ~80 req/s, and SIGINT arrives mid-load. Every request the gateway accepted (its id is
in the gateway's access log) must have reached its client with an answer: 200, or 503 +
``Retry-After`` once the replica drains. Requests the gateway never saw (refused
connections once it is gone) are not losses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.bench.targets import free_port
from app.cli.serve_cmd import sample_request
from model.export import make_random_artifact

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STOP_TARGET_S = 10.0


@dataclass
class Outcome:
    request_id: str
    sent: float
    status: int | None = None
    retry_after: str | None = None
    error: str | None = None


def _config(root: Path, port: int) -> Path:
    data: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "config.local.yaml").read_text())
    serving = data.setdefault("serving", {})
    serving.update(
        http_port=port,
        proxy_port=free_port(),
        autoscaling_enabled=False,
        app_name="quickstop",
    )
    data.setdefault("market_calendar", {})["enabled"] = False
    data.setdefault("metrics", {}).setdefault("prometheus_exporter", {})["enabled"] = False
    tls = data.setdefault("network_security", {}).setdefault("tls", {})
    tls.update(cert_path="certs/tls.crt", key_path="certs/tls.key")
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _client_loop(
    base: str, ca: Path, key: str, stop: threading.Event, out: list[Outcome], rate: float
) -> None:
    body = json.dumps(sample_request("QSTOP")).encode()
    with httpx.Client(verify=str(ca), timeout=5.0) as client:
        next_at = time.monotonic()
        while not stop.is_set():
            next_at += 1.0 / rate
            o = Outcome(request_id=uuid.uuid4().hex, sent=time.monotonic())
            out.append(o)
            try:
                r = client.post(
                    f"{base}/predict",
                    content=body,
                    headers={
                        "X-API-Key": key,
                        "Content-Type": "application/json",
                        "X-Request-ID": o.request_id,
                    },
                )
                o.status, o.retry_after = r.status_code, r.headers.get("retry-after")
            except httpx.HTTPError as exc:
                o.error = type(exc).__name__
            time.sleep(max(0.0, next_at - time.monotonic()))


def _accepted_ids(log_dir: Path) -> set[str]:
    ids = set()
    for path in log_dir.glob("gateway-*.log*"):
        for line in path.read_text(errors="replace").splitlines():
            if '"access"' in line:
                record = json.loads(line)
                if record.get("event") == "access" and record.get("route") == "/predict":
                    ids.add(str(record.get("request_id")))
    return ids


def test_ctrl_c_under_load_stops_in_seconds_and_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    config = _config(tmp_path, port)
    make_random_artifact(tmp_path / ".local" / "models", version="1.0.0", seed=7)
    # Not this test process's Serve settings (the session's stack exported its own ports).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_ADDRESS="local", PYTHONPATH=str(ROOT))
    log = (tmp_path / "serve.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli.main", "--config", str(config), "serve", "--demo"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        while b"Ready after" not in (tmp_path / "serve.out").read_bytes():
            assert proc.poll() is None, (tmp_path / "serve.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "the stack did not get ready"
            time.sleep(0.5)
        key = (tmp_path / ".local" / "secrets" / "demo-api-key").read_text().strip()
        ca = tmp_path / "certs" / "ca.crt"
        base = f"https://127.0.0.1:{port}"
        outs: list[list[Outcome]] = [[] for _ in range(4)]
        stop = threading.Event()
        clients = [
            threading.Thread(target=_client_loop, args=(base, ca, key, stop, out, 20.0))
            for out in outs
        ]
        for t in clients:
            t.start()
        time.sleep(4.0)
        sent_sigint = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        stopped_s = time.monotonic() - sent_sigint
        time.sleep(1.0)
        stop.set()
        for t in clients:
            t.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    everything = [o for out in outs for o in out]
    accepted = _accepted_ids(tmp_path / ".local" / "logs")
    lost = [o for o in everything if o.status is None and o.request_id in accepted]
    ok = sum(o.status == 200 for o in everything)
    refused = [o for o in everything if o.status is not None and o.status != 200]
    errors = Counter(o.error for o in everything if o.error)
    print(
        f"QUICK STOP: exit {stopped_s:.1f}s after SIGINT; sent={len(everything)} ok={ok} "
        f"refused={len(refused)} ({sorted({o.status for o in refused})}) "
        f"not_accepted={sum(o.status is None for o in everything) - len(lost)} lost={len(lost)} "
        f"client_errors={dict(errors)}"
    )
    assert ok > 100, "the load did not run"
    assert lost == [], lost[:5]
    # Nothing cut off mid-request either. Before the stop the only transport failures
    # allowed are refused connects. After SIGINT a connection may also be closed before its
    # request was read: the gateway closes its idle connections as it exits, and a client
    # writing on one at that moment sees the close instead of an answer. That is HTTP/1.1's
    # keep-alive race (RFC 9112, 9.6). It happened once in CI, at 1 of 756 requests. Such a
    # request never reached the gateway (`lost` above checks the access log), so it is no
    # loss, and a prediction is safe to retry.
    before = Counter(o.error for o in everything if o.error and o.sent < sent_sigint)
    assert set(before) <= {"ConnectError"}, before
    assert set(errors) <= {"ConnectError", "RemoteProtocolError"}, errors
    assert all(o.status == 503 and o.retry_after for o in refused), refused[:5]
    assert stopped_s < STOP_TARGET_S, f"Ctrl-C took {stopped_s:.1f} s"
