"""The prediction fast path answers exactly as the FastAPI routes do, case by case.

Two gateways are built from the same configuration and key store, one with
``serving.gateway.fast_path`` on and one with it off, and each case is sent to both: the
status, the JSON body (request ids aside), the headers a client reads, the access line
and the HTTP metrics must match. A recorder around the full stack proves which requests
the fast path answered itself and which it handed on.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.app import create_app
from app.api.fast_predict import FastPredict
from app.config import Logging, ServiceConfig
from app.gateway.cluster import StaticCluster
from app.gateway.state import GatewayState, build_gateway_state
from app.observability import fast_line
from app.observability.logging import configure_logging
from app.observability.refusal_lines import RefusalLines
from app.security.api_keys import ApiKeyStore
from model.export import make_random_artifact
from tests.fakes import FakePredictor
from tests.support.live import columnar_bars
from tests.support.malformed import malformed_requests
from tests.support.security_app import ALLOWED_ORIGIN, write_security_material
from tests.support.tokens import token_for

# Headers whose presence and value a client may depend on.
COMPARED_HEADERS = (
    "content-type",
    "www-authenticate",
    "retry-after",
    "access-control-allow-origin",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "strict-transport-security",
    "content-security-policy",
    "cache-control",
    "connection",
)


@dataclass
class Gateway:
    client: TestClient
    state: GatewayState
    fell_through: list[str] = field(default_factory=list)


@dataclass
class Keys:
    predict: str
    limited: str
    stats_token: str


def _recorder(inner: ASGIApp, seen: list[str]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.append(f"{scope['method']} {scope['path']}")
        await inner(scope, receive, send)

    return app


@contextmanager
def _gateway(config: ServiceConfig, ref: Any) -> Iterator[Gateway]:
    fake = FakePredictor(ref=ref)
    state = build_gateway_state(
        config, dispatch=fake.dispatch, probe=fake.status, cluster=StaticCluster()
    )
    app = create_app(config, state, metrics_registry=state.metrics.registry)
    gateway = Gateway(TestClient(app), state)
    stack = app.build_middleware_stack()
    assert isinstance(stack, FastPredict) == config.serving.gateway.fast_path
    if isinstance(stack, FastPredict):
        stack.app = _recorder(stack.app, gateway.fell_through)
    app.middleware_stack = stack
    with gateway.client:  # runs the lifespan: batcher and readiness start
        yield gateway


@dataclass
class Pair:
    fast: Gateway
    slow: Gateway
    keys: Keys
    log: io.StringIO


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("fast")
    ref = make_random_artifact(root / "models", version="1.0.0", seed=3)
    material = write_security_material(
        root,
        overrides={
            "model_registry": {"path": str(root / "models")},
            "network_security": {"limits": {"max_body_bytes": 65536, "max_batch_symbols": 4}},
            # Two apps' loops in two threads of one process delay each other's timers:
            # that is not the overload loop-lag shedding exists for.
            "batching": {"max_loop_lag_ms": 0, "max_in_flight_mean_ms": 0},
        },
    )
    fast_config = material.config
    slow_config = fast_config.model_copy(deep=True)
    slow_config.serving.gateway.fast_path = False
    auth = fast_config.security.authentication
    store = ApiKeyStore(auth.api_key_store_path)
    _, key = store.create(owner="fast-path", scopes=["model:predict"], priority=5)
    _, limited = store.create(
        owner="slow-client", scopes=["model:predict"], rate_limit_per_s=0.01, burst=1
    )
    token = token_for(auth, "ops", ["model:stats"])
    log = io.StringIO()
    with (
        _json_logging_to(log),
        _gateway(fast_config, ref) as fast,
        _gateway(slow_config, ref) as slow,
    ):
        yield Pair(fast, slow, Keys(key, limited, token), log)


@contextmanager
def _json_logging_to(stream: io.StringIO) -> Iterator[None]:
    """The service's JSON logging into ``stream``; the process's logging restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    saved_structlog, component = structlog.get_config(), fast_line.json_component()
    configure_logging(Logging(), component="fast-test", stream=stream)
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        structlog.configure(**saved_structlog)
        fast_line.use_json(component)


def _cases(keys: Keys) -> list[tuple[str, dict[str, Any]]]:
    good = columnar_bars("ABC")
    body = json.dumps(good).encode()
    key = {"X-API-Key": keys.predict, "Content-Type": "application/json"}
    few = columnar_bars("ABC")
    for name in ("timestamps", "open", "high", "low", "close", "volume"):
        few[name] = few[name][:10]
    return [
        ("ok", {"content": body, "headers": {**key, "X-Request-ID": "client-1"}}),
        ("ok lower priority", {"content": body, "headers": {**key, "X-Priority": "-3"}}),
        (
            "batch",
            {
                "url": "/predict/batch",
                "content": json.dumps({"items": [good, columnar_bars("XYZ")]}).encode(),
                "headers": key,
            },
        ),
        ("no credential", {"content": body, "headers": {"Content-Type": "application/json"}}),
        ("unknown key", {"content": body, "headers": {**key, "X-API-Key": "ck_nope.nope"}}),
        (
            "stats token",
            {
                "content": body,
                "headers": {
                    "Authorization": f"Bearer {keys.stats_token}",
                    "Content-Type": "application/json",
                },
            },
        ),
        ("not a bearer", {"content": body, "headers": {"Authorization": "Basic abc"}}),
        ("malformed json", {"content": b'{"symbol": ', "headers": key}),
        ("empty body", {"content": b"", "headers": key}),
        ("not json", {"content": body, "headers": {**key, "Content-Type": "text/plain"}}),
        ("missing field", {"content": b'{"symbol": "A"}', "headers": key}),
        ("too few bars", {"content": json.dumps(few).encode(), "headers": key}),
        (
            "unknown version",
            {"content": json.dumps({**good, "version": "9.9.9"}).encode(), "headers": key},
        ),
        (
            "batch too large",
            {
                "url": "/predict/batch",
                "content": json.dumps({"items": [good] * 5}).encode(),
                "headers": key,
            },
        ),
        # Bodies the fast path's decoder leaves to pydantic (app/api/fast_body.py): the
        # answers, the accepted ones included, must still be the routes' own.
        ("repeated key", {"content": body[:-1] + b', "symbol": "XYZ"}', "headers": key}),
        (
            "numbers as strings",
            {
                "content": json.dumps(
                    {**good, "volume": [str(v) for v in good["volume"]]}
                ).encode(),
                "headers": key,
            },
        ),
        ("byte-order mark", {"content": b"\xef\xbb\xbf" + body, "headers": key}),
        (
            "batch with a nested array",
            {
                "url": "/predict/batch",
                "content": json.dumps(
                    {"items": [good, {**good, "open": [[good["open"][0]], *good["open"][1:]]}]}
                ).encode(),
                "headers": key,
            },
        ),
        ("bad priority", {"content": body, "headers": {**key, "X-Priority": "high"}}),
        ("priority out of range", {"content": body, "headers": {**key, "X-Priority": "1000"}}),
        ("deadline passed", {"content": body, "headers": {**key, "X-Request-Deadline-Ms": "1"}}),
        # An integer past any float: no clock reaches it, and converting it must not 500.
        (
            "deadline past any clock",
            {"content": body, "headers": {**key, "X-Request-Deadline-Ms": "1" + "0" * 400}},
        ),
        ("bad request id", {"content": body, "headers": {**key, "X-Request-ID": "<b>x</b>"}}),
        # Handed on to the full stack:
        ("cors", {"content": body, "headers": {**key, "Origin": ALLOWED_ORIGIN}}),
        ("query string", {"url": "/predict?x=1", "content": body, "headers": key}),
        (
            "serve timeout header",
            {"content": body, "headers": {**key, "X-Request-Timeout-Seconds": "0.001"}},
        ),
        ("too large", {"content": b"x" * 70000, "headers": key}),
        ("get", {"method": "GET", "content": b"", "headers": key}),
        ("limited 1", {"content": body, "headers": {**key, "X-API-Key": keys.limited}}),
        ("limited 2", {"content": body, "headers": {**key, "X-API-Key": keys.limited}}),
    ]


HANDED_ON = {"cors", "query string", "serve timeout header", "too large", "get"}


def _send(gw: Gateway, case: dict[str, Any]) -> Any:
    return gw.client.request(
        case.get("method", "POST"),
        case.get("url", "/predict"),
        content=case["content"],
        headers=case["headers"],
    )


def _normalized(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<id>" if k == "request_id" else _normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    return value


@contextmanager
def _loop_behind(state: GatewayState) -> Iterator[None]:
    """The gateway's loop a second behind (past every priority's budget), then restored."""
    lag = state.loop_lag
    saved = (lag.max_lag_s, lag.lag_s)
    lag.max_lag_s, lag.lag_s = 0.1, 1.0
    try:
        yield
    finally:
        lag.max_lag_s, lag.lag_s = saved


def _access_lines(log: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in log.getvalue().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("event") == "access"]


def _http_samples(gw: Gateway) -> dict[tuple[str, ...], float]:
    samples = {}
    for family in gw.state.metrics.registry.collect():
        if family.name in ("http_requests", "http_request_duration_seconds"):
            for s in family.samples:
                if s.name.endswith(("_total", "_count")):
                    samples[(s.name, *sorted(s.labels.items()))] = s.value  # type: ignore[arg-type]
    return samples


def test_every_case_answers_the_same_on_both_paths(pair: Pair) -> None:
    cases = _cases(pair.keys)
    pair.log.seek(0)
    pair.log.truncate()
    for name, case in cases:
        a = _send(pair.fast, case)
        b = _send(pair.slow, case)
        assert a.status_code == b.status_code, (name, a.text, b.text)
        assert a.status_code != 500, (name, a.text)
        assert _normalized(a.json()) == _normalized(b.json()), name
        for header in COMPARED_HEADERS:
            assert a.headers.get(header) == b.headers.get(header), (name, header)
        body = a.json()
        rid = body["error"]["request_id"] if "error" in body else body.get("request_id")
        assert rid == a.headers["x-request-id"], name

    # The fast path answered every case but the handed-on ones, which reached the full stack.
    handed_on = [f"{c.get('method', 'POST')} {c.get('url', '/predict').split('?')[0]}"
                 for n, c in cases if n in HANDED_ON]  # fmt: skip
    assert sorted(pair.fast.fell_through) == sorted(handed_on)

    # One access line per request on both paths, with the same fields.
    lines = _access_lines(pair.log)
    assert len(lines) == 2 * len(cases)
    for a_line, b_line in zip(lines[0::2], lines[1::2], strict=True):
        for volatile in ("request_id", "latency_ms", "timestamp"):
            assert a_line.pop(volatile) is not None
            assert b_line.pop(volatile) is not None
        assert a_line == b_line

    # And the same HTTP metrics.
    assert _http_samples(pair.fast) == _http_samples(pair.slow)
    assert (
        _http_samples(pair.fast)[
            ("http_requests_total", ("handler", "/predict"), ("method", "POST"), ("status", "2xx"))
        ]
        >= 3
    )
    # The client's sane request id is kept; an unsafe one replaced.
    by_name = dict(cases)
    # The bodies the decoder left went to pydantic: its coercions accepted two of them.
    assert _send(pair.fast, by_name["repeated key"]).json()["symbol"] == "XYZ"  # the last
    assert _send(pair.fast, by_name["numbers as strings"]).status_code == 200
    assert _send(pair.fast, by_name["byte-order mark"]).status_code == 400
    assert _send(pair.fast, by_name["batch with a nested array"]).status_code == 422
    far = _send(pair.fast, by_name["deadline past any clock"]).json()["error"]
    assert (far["code"], far["details"][0]["loc"]) == (
        "invalid_request",
        ["header", "X-Request-Deadline-Ms"],
    )
    assert _send(pair.fast, by_name["ok"]).headers["x-request-id"] == "client-1"
    assert "<" not in _send(pair.fast, by_name["bad request id"]).headers["x-request-id"]


# Every answer a malformed request may get; anything else (a 500 above all) is a defect.
MALFORMED_STATUSES = {200, 400, 404, 413, 422, 429, 503}


def test_malformed_requests_answer_the_same_on_both_paths_and_never_500(pair: Pair) -> None:
    """Seeded random edits of good bodies and headers (tests/support/malformed.py): the
    fast path's own parsing and checks must give FastAPI's answer to every one of them."""
    good = columnar_bars("ABC")
    codes: Counter[str] = Counter()
    requests = malformed_requests(good, [good, columnar_bars("XYZ")], seed=20261206, count=500)
    for n, case in enumerate(requests):
        headers = {**case.headers, "X-API-Key": pair.keys.predict}
        a = pair.fast.client.post(case.path, content=case.body, headers=headers)
        b = pair.slow.client.post(case.path, content=case.body, headers=headers)
        where = (n, case.path, case.headers, case.body[:300])
        assert a.status_code in MALFORMED_STATUSES, (*where, a.text)
        assert a.status_code == b.status_code, (*where, a.text, b.text)
        assert _normalized(a.json()) == _normalized(b.json()), where
        if a.status_code != 200:
            assert list(a.json()) == ["error"], (*where, a.text)
            assert a.json()["error"]["code"], (*where, a.text)
        codes[a.json()["error"]["code"] if a.status_code != 200 else "ok"] += 1
    # The corpus reached every layer it is there to test: the JSON parser, the schema, the
    # bar checks after it, and past all of them (this seed: 62 / 238 / 146 / 49 of 500).
    assert {"ok", "invalid_request", "invalid_bars", "malformed_json"} <= set(codes), codes


def test_a_stopping_gateway_refuses_new_predictions_and_closes_the_connection(
    pair: Pair,
) -> None:
    case = dict(_cases(pair.keys))["ok"]
    for gw in (pair.fast, pair.slow):
        gw.state.stopping = True
        try:
            r = _send(gw, case)
            ready = gw.client.get("/ready")
        finally:
            gw.state.stopping = False
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "unavailable"
        assert "stopping" in r.json()["error"]["message"]
        assert r.headers["retry-after"] == "1"
        assert ready.status_code == 503
        assert "stopping" in ready.json()["error"]["message"]
        if gw is pair.fast:  # the client's next request goes out on a new connection
            assert r.headers["connection"] == "close"
    assert _send(pair.fast, case).status_code == 200


def _raw_post(
    gw: Gateway, headers: list[tuple[bytes, bytes]], body: bytes, *, complete: bool = True
) -> tuple[int, Any]:
    """POST ``body`` to ``/predict`` with exactly ``headers`` (the test client would set its
    own Content-Length), through the gateway's whole ASGI app on its own loop; ``complete``
    False: the client goes away after sending ``body``, before the rest of it."""

    async def call() -> tuple[int, Any]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/predict",
            "raw_path": b"/predict",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        messages = [{"type": "http.request", "body": body, "more_body": not complete}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await gw.client.app(scope, receive, send)
        [start] = [m for m in sent if m["type"] == "http.response.start"]
        payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], json.loads(payload)

    return gw.client.portal.call(call)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "declared",
    [
        # Leading zeros are a valid Content-Length (1*DIGIT) and uvicorn's httptools parser
        # passes them on; int() refuses a string of more than 4300 digits.
        "0" * 5000 + "{n}",
        # str.isdigit() takes a superscript two, int() does not (no HTTP parser here
        # passes one on, but an ASGI scope may carry it).
        "\u00b2",
    ],
    ids=["leading zeros", "superscript digit"],
)
def test_an_odd_content_length_gets_the_same_answer_on_both_paths_and_never_500(
    pair: Pair, declared: str
) -> None:
    body = json.dumps(columnar_bars("ABC")).encode()
    headers = [
        (b"x-api-key", pair.keys.predict.encode()),
        (b"content-type", b"application/json"),
        (b"content-length", declared.format(n=len(body)).encode("latin-1")),
    ]
    fast = _raw_post(pair.fast, headers, body)
    slow = _raw_post(pair.slow, headers, body)
    assert fast[0] == slow[0], (fast, slow)
    assert fast[0] in (200, 400, 413), fast
    assert _normalized(fast[1]) == _normalized(slow[1])


@pytest.mark.parametrize("sent", [0, 100], ids=["nothing", "part"])
def test_a_client_gone_before_its_body_arrived_is_no_server_error(pair: Pair, sent: int) -> None:
    """Answered (to nobody) as the short body it is, on both paths: never counted as a 5xx
    in the error budget nor logged as an unhandled error."""
    body = json.dumps(columnar_bars("ABC")).encode()
    headers = [
        (b"x-api-key", pair.keys.predict.encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    fast = _raw_post(pair.fast, headers, body[:sent], complete=False)
    slow = _raw_post(pair.slow, headers, body[:sent], complete=False)
    assert fast[0] == slow[0], (fast, slow)
    assert fast[0] in (400, 422), fast
    assert _normalized(fast[1]) == _normalized(slow[1])


@pytest.mark.parametrize("why", ["overloaded", "stopping"])
def test_a_refused_cors_prediction_still_carries_the_cors_headers(pair: Pair, why: str) -> None:
    """A browser reads a refusal (and its Retry-After) only with the CORS headers on it."""
    case = dict(_cases(pair.keys))["cors"]
    answers = []
    for gw in (pair.fast, pair.slow):
        with _loop_behind(gw.state) if why == "overloaded" else _stopping(gw.state):
            answers.append(_send(gw, case))
    fast, slow = answers
    assert fast.status_code == slow.status_code == (429 if why == "overloaded" else 503)
    assert fast.headers.get("access-control-allow-origin") == ALLOWED_ORIGIN
    for header in (*COMPARED_HEADERS, "access-control-expose-headers", "vary"):
        assert fast.headers.get(header) == slow.headers.get(header), header
    assert _normalized(fast.json()) == _normalized(slow.json())


def test_a_cors_prediction_refused_at_the_in_flight_limit_is_counted_once(pair: Pair) -> None:
    case = dict(_cases(pair.keys))["cors"]
    limit = pair.fast.state.concurrency  # off in this pair: on, and full, for this test
    saved = (limit.target_s, limit.in_flight, limit.refused)
    limit.target_s, limit.in_flight = 0.075, int(limit.limit)
    try:
        answer = _send(pair.fast, case)
        refused = limit.refused - saved[2]
    finally:
        limit.target_s, limit.in_flight, limit.refused = saved
    assert answer.status_code == 429
    assert answer.headers.get("access-control-allow-origin") == ALLOWED_ORIGIN
    assert refused == 1  # the full stack's refusal, not the fast path's as well


@contextmanager
def _stopping(state: GatewayState) -> Iterator[None]:
    state.stopping = True
    try:
        yield
    finally:
        state.stopping = False


def test_the_fast_path_sheds_before_it_authenticates_when_the_loop_is_behind(
    pair: Pair,
) -> None:
    with _loop_behind(pair.fast.state):
        no_key = _send(pair.fast, {"content": b"{}", "headers": {}})
    assert no_key.status_code == 429  # the cheapest answer: no key check, no body parse
    assert no_key.json()["error"]["code"] == "queue_full"
    assert int(no_key.headers["retry-after"]) >= 1


async def test_a_refusal_at_the_edge_has_the_same_answer_and_the_rest_pass(
    pair: Pair,
) -> None:
    fast = pair.fast.client.app.state.fast_predict  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        raise AssertionError("a refusal or a hand-on never reads the body")

    def scope(method: str, path: str) -> dict[str, Any]:
        return {  # no Content-Length: not a request the fast path answers itself
            "type": "http",
            "method": method,
            "path": path,
            "headers": [(b"x-request-id", b"edge-1")],
        }

    assert await fast.answer(scope("POST", "/predict"), receive, send) is None  # to the stack
    with _loop_behind(pair.fast.state):
        assert await fast.answer(scope("GET", "/healthz"), receive, send) is None  # probes pass
        assert await fast.answer(scope("POST", "/predict/batch"), receive, send) == 429
        again = {**scope("POST", "/predict"), "headers": [(b"x-request-id", b"edge-2")]}
        assert await fast.refuse(again, send) == 429  # rendered once, its own id each time
    start, body, start_2, body_2 = sent
    assert json.loads(body_2["body"])["error"]["request_id"] == "edge-2"
    assert body_2["body"].replace(b"edge-2", b"edge-1") == body["body"]
    assert [h for h in start_2["headers"] if h[0] != b"x-request-id"] == [
        h for h in start["headers"] if h[0] != b"x-request-id"
    ]
    assert start["status"] == 429
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"1"
    assert headers[b"x-content-type-options"] == b"nosniff"
    error = json.loads(body["body"])["error"]
    assert (error["code"], error["request_id"]) == ("queue_full", "edge-1")


async def test_a_flood_of_refusals_writes_a_few_lines_and_counts_every_one(pair: Pair) -> None:
    fast = pair.fast.client.app.state.fast_predict  # type: ignore[attr-defined]
    now = [1000.0]
    saved_lines = fast.refusal_lines
    fast.refusal_lines = RefusalLines(3, clock=lambda: now[0])
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    before = _http_samples(pair.fast)
    pair.log.seek(0)
    pair.log.truncate()
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    try:
        with _loop_behind(pair.fast.state):
            results = [await fast.refuse(scope, send) for _ in range(10)]
            now[0] += 1.5
            results.append(await fast.refuse(scope, send))  # the next second: its own line
    finally:
        fast.refusal_lines = saved_lines
    assert results == statuses == [429] * 11, "every refusal answered"
    lines = [json.loads(x) for x in pair.log.getvalue().splitlines() if x.startswith("{")]
    own = [x for x in lines if x["event"] == "access"]
    assert [(x["status"], x["route"]) for x in own] == [(429, "/predict")] * 4
    counted = [x for x in lines if x["event"] == "access_suppressed"]
    assert [(x["route"], x["status"], x["count"]) for x in counted] == [("/predict", 429, 7)]
    key = ("http_requests_total", ("handler", "/predict"), ("method", "POST"), ("status", "4xx"))
    assert _http_samples(pair.fast)[key] - before.get(key, 0.0) == 11, "the metrics count all"
    # A prediction the gateway takes is no refusal: refuse() leaves it to take().
    assert await fast.refuse(scope, send) is None


async def test_without_access_lines_refusals_leave_no_counts_either(tmp_path: Any) -> None:
    ref = make_random_artifact(tmp_path / "models", version="1.0.0", seed=3)
    config = write_security_material(
        tmp_path,
        overrides={
            "model_registry": {"path": str(tmp_path / "models")},
            "logging": {"enable_access_logs": False, "refusal_lines_per_s": 0},
        },
    ).config
    fake = FakePredictor(ref=ref)
    state = build_gateway_state(
        config, dispatch=fake.dispatch, probe=fake.status, cluster=StaticCluster()
    )
    fast = create_app(config, state, metrics_registry=state.metrics.registry).state.fast_predict

    async def send(message: dict[str, Any]) -> None:
        return None

    log = io.StringIO()
    with _loop_behind(state), _json_logging_to(log):
        scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
        assert [await fast.refuse(scope, send) for _ in range(5)] == [429] * 5
        assert fast.refusal_lines is None
    events = [json.loads(x)["event"] for x in log.getvalue().splitlines() if x.startswith("{")]
    assert "access" not in events
    assert "access_suppressed" not in events
