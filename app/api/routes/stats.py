"""``GET /stats``: live figures for operators (scope ``model:stats``)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from app.gateway.schemas import ErrorResponse
from app.gateway.serving_view import serving_view
from app.gateway.state import GatewayState
from app.security.dependencies import StatsPrincipal

router = APIRouter(tags=["operations"])

# ``?recent=N``: the latency, queue-wait and model-time percentiles of the N newest rows
# only. The windows hold the last few thousand rows, so a quiet minute after a busy one
# would otherwise report the busy one's figures (``cnnlstm bench`` asks for its run's rows).
Recent = Annotated[
    int | None,
    Query(
        ge=1,
        le=1_000_000,
        description="Summarise the latency, queue-wait and model-time windows over their "
        "N newest rows only (at most what the window holds).",
    ),
]


@router.get(
    "/stats",
    summary="Model in service, request counts, latency percentiles, batches, caches, replicas",
    responses={
        401: {"model": ErrorResponse, "description": "Missing or bad credentials"},
        403: {"model": ErrorResponse, "description": "Credentials lack the model:stats scope"},
        422: {"model": ErrorResponse, "description": "``recent`` is not a whole number >= 1"},
    },
)
async def stats(
    request: Request, principal: StatsPrincipal, recent: Recent = None
) -> dict[str, Any]:
    state: GatewayState = request.app.state.gateway
    status = state.readiness.status
    snapshot = state.metrics.snapshot(recent)
    features = state.features
    pred_extra = status.extra
    model_hits = int(pred_extra.get("model_cache_hits", 0) or 0)  # type: ignore[call-overload]
    model_misses = int(pred_extra.get("model_cache_misses", 0) or 0)  # type: ignore[call-overload]
    b = state.batcher.stats
    out: dict[str, Any] = {
        "deployment": state.config.deployment.model_dump(),
        "uptime_s": round(time.time() - state.started_at, 3),
        "model": status.model.to_json() if status.model else None,
        "predictor": {
            "ready": status.ready,
            "stage": status.stage,
            "error": status.error,
            "device": status.device,
            "numerics": status.numerics,
            "numerics_fallback": status.numerics_fallback,
            "engine": status.engine,
            "engine_fallback": status.engine_fallback,
            "loaded_versions": list(status.loaded_models),
        },
        **snapshot,
        "queue": {
            "depth": state.batcher.depth,
            "capacity": state.batcher.capacity,
            "submitted": b.submitted,
            "rejected_full": b.rejected_full,
            "expired_deadlines": b.expired,
            "gateway_batches": b.batches,
            "gateway_rows": b.rows,
            "mean_gateway_batch": round(b.rows / b.batches, 3) if b.batches else None,
            "batches_in_flight_limit": state.batcher.max_in_flight,
        },
        # The three overload controls: queue-wait admission, event-loop lag, in flight.
        "overload": {
            "refused_queue_wait": b.rejected_late,
            "loop_lag_ms": round(state.loop_lag.lag_s * 1000.0, 3),
            "in_flight": state.concurrency.in_flight,
            "in_flight_limit": round(state.concurrency.limit, 1),
            "refused_in_flight": state.concurrency.refused,
        },
        "replicas": await state.cluster.replicas(),
        "serving": serving_view(state.config),
    }
    # One cache section: the gateway's feature cache (from the metrics) plus the
    # predictor's model cache (from its last status report).
    cache = out.setdefault("cache", {})
    cache.setdefault("feature", {})["entries"] = len(features)
    cache["model"] = {
        "hits": model_hits,
        "misses": model_misses,
        "hit_rate": (
            round(model_hits / (model_hits + model_misses), 4)
            if model_hits + model_misses
            else None
        ),
    }
    if state.rollout is not None:
        # Richer than the metrics' {state, green_weight_pct}: blue, green, freshness.
        out["rollout"] = state.rollout.view()
    if state.shadow is not None:
        out["shadow"] = state.shadow.view()
    for name, provider in state.extra_stats.items():
        out[name] = provider()
    return out
