"""The Serve guards against this venv's Ray Serve: the app hears when draining starts, and a
prediction answered at the edge is counted and recorded as Serve's own handler would."""

from __future__ import annotations

import inspect
import time
from types import SimpleNamespace
from typing import Any

import pytest

from app.serve import serve_patches
from app.serve.serve_patches import announce_drain


@pytest.fixture
def restore_drain() -> Any:
    from ray.serve._private import replica

    original = replica.Replica._drain_ongoing_requests
    yield
    replica.Replica._drain_ongoing_requests = original


async def test_the_app_is_told_after_the_draining_period_and_serve_still_waits(
    restore_drain: None,
) -> None:
    from ray.serve._private import replica

    told: list[float] = []
    assert announce_drain(lambda: told.append(time.monotonic()))
    assert announce_drain(lambda: told.append(time.monotonic()))  # re-applied: wraps once
    ongoing = [2]

    def get_num_ongoing_requests() -> int:
        ongoing[0] = max(0, ongoing[0] - 1)  # the taken requests finish one by one
        return ongoing[0]

    fake = SimpleNamespace(
        _deployment_config=SimpleNamespace(graceful_shutdown_wait_loop_s=0.01),
        get_num_ongoing_requests=get_num_ongoing_requests,
    )
    started = time.monotonic()
    await replica.Replica._drain_ongoing_requests(fake, 0.2)  # type: ignore[arg-type]
    assert len(told) == 1, "one callback: the second guard replaced the first"
    assert told[0] - started >= 0.19, "reachable for the whole draining period first"
    assert ongoing == [0], "Serve's own wait for ongoing requests still ran"


class _Books:
    """A replica's metrics manager as the edge guard sees it; each call is checked against
    this Ray's ``ReplicaMetricsManager`` signature, so a renamed parameter fails here."""

    def __init__(self) -> None:
        self.ongoing = 0
        self.recorded: list[tuple[str, dict[str, Any]]] = []

    def _check(self, name: str, *args: Any, **kwargs: Any) -> None:
        from ray.serve._private.replica import ReplicaMetricsManager

        inspect.signature(getattr(ReplicaMetricsManager, name)).bind(None, *args, **kwargs)

    def inc_num_ongoing_requests(self, request: Any) -> None:
        self._check("inc_num_ongoing_requests", request)
        assert request.is_direct_ingress
        assert request.is_http_request
        self.ongoing += 1

    def dec_num_ongoing_requests(self, request: Any) -> None:
        self._check("dec_num_ongoing_requests", request)
        self.ongoing -= 1

    def record_request_metrics(self, **kwargs: Any) -> None:
        self._check("record_request_metrics", **kwargs)
        self.recorded.append(("request", kwargs))

    def record_ingress_request_metrics(self, **kwargs: Any) -> None:
        self._check("record_ingress_request_metrics", **kwargs)
        self.recorded.append(("ingress", kwargs))


class _Replica:
    def __init__(self, books: Any) -> None:
        if books is not None:
            self._metrics_manager = books
        self._deployment_id = SimpleNamespace(app_name="cnnlstm", name="gateway")
        self.served: list[str] = []

    async def _direct_ingress_asgi(self, scope: Any, receive: Any, send: Any) -> None:
        self.served.append(scope["path"])


@pytest.fixture
def edge() -> Any:
    yield
    serve_patches._edge.clear()


def _http(path: str) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "headers": []}


async def _nothing() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def _drop(message: Any) -> None:
    return None


async def _no_refusal(scope: Any, send: Any) -> int | None:
    return None


async def test_an_edge_answer_counts_as_ongoing_and_is_recorded_as_serve_would(
    edge: None,
) -> None:
    books = _Books()
    replica = _Replica(books)
    seen_ongoing: list[int] = []

    async def answer(scope: Any, receive: Any, send: Any) -> int | None:
        if scope["path"] == "/healthz":
            return None
        seen_ongoing.append(books.ongoing)  # the drain and autoscaling see it in flight
        return 200 if scope["path"] == "/predict" else 422

    serve_patches.answer_at_the_edge(answer, _no_refusal)
    guard = serve_patches._EdgeGuard(replica._direct_ingress_asgi)
    await guard(_http("/predict"), _nothing, _drop)
    await guard(_http("/predict/batch"), _nothing, _drop)
    await guard(_http("/healthz"), _nothing, _drop)

    assert seen_ongoing == [1, 1]
    assert books.ongoing == 0
    assert replica.served == ["/healthz"], "only the request not answered reaches Serve"
    kinds = [(kind, kw["route"]) for kind, kw in books.recorded]
    assert kinds == [
        ("request", "/predict"),
        ("ingress", "/predict"),
        ("request", "/predict/batch"),
        ("ingress", "/predict/batch"),
    ]
    ingress = [kw for kind, kw in books.recorded if kind == "ingress"]
    assert [(kw["status_code"], kw["is_error"]) for kw in ingress] == [
        ("200", False),
        ("422", True),
    ]
    assert {kw["app_name"] for kw in ingress} == {"cnnlstm"}
    assert {kw["deployment_name"] for kw in ingress} == {"gateway"}


async def test_a_refusal_at_the_edge_stays_out_of_serves_books(edge: None) -> None:
    books = _Books()
    replica = _Replica(books)
    answered: list[str] = []

    async def refuse(scope: Any, send: Any) -> int | None:
        return 429 if scope["path"] == "/predict" else None

    async def answer(scope: Any, receive: Any, send: Any) -> int | None:
        answered.append(scope["path"])
        return 200

    serve_patches.answer_at_the_edge(answer, refuse)
    guard = serve_patches._EdgeGuard(replica._direct_ingress_asgi)
    await guard(_http("/predict"), _nothing, _drop)
    await guard(_http("/predict/batch"), _nothing, _drop)

    assert answered == ["/predict/batch"], "a refused request is not answered again"
    assert replica.served == []
    assert [(kind, kw["route"]) for kind, kw in books.recorded] == [
        ("request", "/predict/batch"),
        ("ingress", "/predict/batch"),
    ]
    assert books.ongoing == 0


async def test_the_count_is_given_back_when_the_answer_fails(edge: None) -> None:
    books = _Books()

    async def answer(scope: Any, receive: Any, send: Any) -> int | None:
        raise ConnectionResetError("the client left mid-answer")

    serve_patches.answer_at_the_edge(answer, _no_refusal)
    guard = serve_patches._EdgeGuard(_Replica(books)._direct_ingress_asgi)
    with pytest.raises(ConnectionResetError):
        await guard(_http("/predict"), _nothing, _drop)
    assert books.ongoing == 0
    assert books.recorded == []


async def test_without_serves_books_the_guard_stays_out(edge: None) -> None:
    called: list[str] = []

    async def answer(scope: Any, receive: Any, send: Any) -> int | None:
        called.append(scope["path"])
        return 200

    serve_patches.answer_at_the_edge(answer, _no_refusal)
    replica = _Replica(None)  # a Ray that moved the metrics manager
    guard = serve_patches._EdgeGuard(replica._direct_ingress_asgi)
    await guard(_http("/predict"), _nothing, _drop)
    assert called == []
    assert replica.served == ["/predict"]
