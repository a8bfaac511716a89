"""deploy/examples/predict_client.py against the real gateway app over HTTPS (uvicorn).

The app is ``create_app`` with the fake predictor (tests/api/test_gateway_api.py's
``_build``), served by uvicorn with the dev certificates in a background thread; a
recording ASGI wrapper keeps what reached the server. A key with ``burst=1`` makes the
real rate limiter answer the second call with 429 and ``Retry-After: 1``.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.security.api_keys import ApiKeyStore
from app.security.dev_certs import ensure_dev_certs
from model.export import make_random_artifact
from tests.api.test_gateway_api import _build
from tests.fakes import FakePredictor
from tests.support.live import columnar_bars

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "predict_client.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("predict_client_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


pc = _load_example()


@dataclass
class Recorder:
    """Outermost ASGI layer: each request's id, deadline header and answer status."""

    app: ASGIApp
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        row: dict[str, Any] = {
            "path": scope["path"],
            "request_id": headers.get("x-request-id"),
            "deadline_ms": headers.get("x-request-deadline-ms"),
        }
        self.seen.append(row)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                row["status"] = message["status"]
                row["retry_after"] = dict(
                    (k.decode().lower(), v.decode()) for k, v in message.get("headers", ())
                ).get("retry-after")
            await send(message)

        await self.app(scope, receive, recording_send)


@dataclass
class Live:
    base_url: str
    ca_file: Path
    key: str
    recorder: Recorder


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("client-example")
    certs = ensure_dev_certs(root / "certs")
    ref = make_random_artifact(root / "models", version="1.0.0", seed=1)
    # Two tokens a second, a bucket of one: back-to-back calls get 429 + Retry-After: 1.
    # The key goes into the store before the app first reads it (it re-reads once a second).
    store_path = root / "secrets" / "api-keys.json"
    store_path.parent.mkdir(mode=0o700)
    _, key = ApiKeyStore(store_path).create(
        owner="client-example", scopes=["model:predict"], rate_limit_per_s=2.0, burst=1
    )
    state, app, _ = _build(root, FakePredictor(ref=ref))  # type: ignore[arg-type]
    assert state.config.security.authentication.api_key_store_path == store_path
    recorder = Recorder(app)  # type: ignore[arg-type]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            recorder,
            ssl_certfile=str(certs.cert),
            ssl_keyfile=str(certs.key),
            log_config=None,
            access_log=False,
            ws="none",
            lifespan="on",  # the gateway state (batcher, readiness) starts and stops
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Live(f"https://127.0.0.1:{port}", certs.ca, key, recorder)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _wait_for_a_full_bucket() -> None:
    time.sleep(0.6)  # 2 tokens/s, bucket of 1: empty to full in 0.5 s


def test_retries_429_after_retry_after_with_one_request_id(live: Live) -> None:
    _wait_for_a_full_bucket()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    with pc.PredictClient(live.base_url, live.key, live.ca_file, sleep=sleep) as client:
        first = client.predict(columnar_bars("EURUSD"), deadline_ms=5000)
        assert first["symbol"] == "EURUSD"
        live.recorder.seen.clear()
        answer = client.predict(columnar_bars("EURUSD"), deadline_ms=5000, request_id="desk-7.a")

    assert answer["request_id"] == "desk-7.a"  # the server kept the client's id
    assert slept == [1.0]  # exactly the Retry-After the rate limiter sent
    tries = [r for r in live.recorder.seen if r["path"] == "/predict"]
    assert [(r["status"], r["retry_after"]) for r in tries] == [(429, "1"), (200, None)]
    assert {r["request_id"] for r in tries} == {"desk-7.a"}
    # One deadline for the whole call, sent on every try, in the future when sent.
    assert len({r["deadline_ms"] for r in tries}) == 1
    assert int(tries[0]["deadline_ms"]) > time.time() * 1000 - 4000


def test_a_retry_after_past_the_deadline_is_not_waited_for(live: Live) -> None:
    _wait_for_a_full_bucket()
    slept: list[float] = []
    with pc.PredictClient(live.base_url, live.key, live.ca_file, sleep=slept.append) as client:
        client.predict(columnar_bars(), deadline_ms=5000)
        live.recorder.seen.clear()
        with pytest.raises(pc.PredictError) as err:
            client.predict(columnar_bars(), deadline_ms=500)  # Retry-After 1 s > 0.5 s left
    assert (err.value.status, err.value.code) == (429, "rate_limited")
    assert slept == []
    assert len([r for r in live.recorder.seen if r["path"] == "/predict"]) == 1


def test_errors_without_retry_after_are_final_and_parsed(live: Live) -> None:
    _wait_for_a_full_bucket()
    client = pc.PredictClient(live.base_url, live.key, live.ca_file, sleep=pytest.fail)
    with client, pytest.raises(pc.PredictError) as err:
        client.predict({**columnar_bars(), "close": [1.0]}, request_id="bad-1")
    assert (err.value.status, err.value.code, err.value.request_id) == (
        422,
        "invalid_bars",
        "bad-1",
    )


def test_a_server_the_ca_did_not_sign_is_refused(live: Live, tmp_path: Path) -> None:
    other = ensure_dev_certs(tmp_path / "other")  # a different CA
    client = pc.PredictClient(live.base_url, live.key, other.ca, sleep=pytest.fail)
    with client, pytest.raises(pc.PredictError, match="could not connect"):
        client.predict(columnar_bars())


def test_the_key_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("cnl_from_file\n")
    assert pc.load_api_key(path, env={}) == "cnl_from_file"
    assert pc.load_api_key(None, env={pc.API_KEY_ENV: "cnl_from_env"}) == "cnl_from_env"
    with pytest.raises(SystemExit):
        pc.load_api_key(None, env={})


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = 1_700_000_000.0
    assert pc.parse_retry_after("3", now) == 3.0
    assert pc.parse_retry_after("Tue, 14 Nov 2023 22:13:25 GMT", now) == pytest.approx(5.0)
    assert pc.parse_retry_after("soon", now) is None
    assert pc.parse_retry_after(None, now) is None


def test_the_command_line_reads_the_key_file_and_prints_the_answer(
    live: Live, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _wait_for_a_full_bucket()
    key_file = tmp_path / "api-key"
    key_file.write_text(live.key + "\n")
    body = tmp_path / "request.json"
    body.write_text(json.dumps(columnar_bars("EURUSD")))
    argv = ["--url", live.base_url, "--ca-file", str(live.ca_file), "--api-key-file"]
    code = pc.main([*argv, str(key_file), "--body", str(body), "--request-id", "cli-1"])
    assert code == 0
    # The server runs in this process: its log lines share stdout; the answer is the JSON line.
    printed = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith('{"symbol"')
    ]
    answer = json.loads(printed[-1])
    assert (answer["symbol"], answer["request_id"]) == ("EURUSD", "cli-1")
