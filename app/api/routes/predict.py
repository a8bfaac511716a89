"""``POST /predict`` and ``POST /predict/batch``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request

from app.api.body import deadline_hint, openapi_body, priority_hint, read_model
from app.api.errors import ApiError, FastJSONResponse
from app.api.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    ErrorResponse,
    PredictRequest,
    PredictResponse,
)
from app.gateway.batcher import (
    DeadlineExceededError,
    PredictorFailedError,
    QueueFullError,
    RowResult,
)
from app.gateway.state import GatewayState
from app.gateway.windows import window_from_request
from app.security.dependencies import PredictPrincipal
from model.common.errors import ModelNotFoundError
from model.common.refs import ModelRef

router = APIRouter(tags=["predictions"])

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Malformed JSON",
        401: "Missing or bad credentials",
        403: "Credentials lack the model:predict scope",
        404: "Unknown model or version",
        413: "Body over the configured size limit",
        422: "Invalid bars (lengths, NaN/Inf, prices, volume, timestamps)",
        429: "Rate limit or prediction queue full (see Retry-After)",
        503: "Predictor not ready, unavailable, or the client deadline passed",
    }.items()
}


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def _resolve(state: GatewayState, model: str | None, version: str | None) -> ModelRef:
    in_service = state.readiness.model
    if in_service is None:
        raise ApiError(
            503, "the model is not loaded yet", code="not_ready", headers={"Retry-After": "5"}
        )
    if version is None and model in (None, in_service.name):
        # No version named: blue/green decides (blue, or green for its share of traffic).
        return state.rollout.pick(in_service) if state.rollout is not None else in_service
    name = model or in_service.name
    try:
        return state.registry.resolve(name, version)
    except (ModelNotFoundError, ValueError):
        what = f"model {name!r}" + (f" version {version!r}" if version else "")
        raise ApiError(404, f"{what} is not in the registry", code="model_not_found") from None


async def _predict_rows(
    request: Request,
    state: GatewayState,
    items: list[PredictRequest],
    *,
    priority: int,
    deadline: float | None,
) -> list[dict[str, Any]]:
    """Each item's prediction, in order, as the response's JSON objects (``Prediction``).

    Built as plain dicts and rendered by orjson: the route returns them in a response
    object, so FastAPI does not validate and re-encode what was just computed."""
    limits = state.config.network_security.limits
    started = time.perf_counter()
    prepared = []
    for item in items:
        ref = _resolve(state, item.model, item.version)
        window = window_from_request(item, max_bars=limits.max_bars)
        key, feats = state.features.lookup(window)
        state.metrics.observe_cache("feature", feats is not None)
        prepared.append((item, ref, window, key, feats))
    rid = getattr(request.state, "request_id", "") or ""
    futures = []
    try:
        for _, ref, window, key, feats in prepared:
            futures.append(
                state.batcher.submit(
                    ref,
                    feats,
                    bars=window.bars if feats is None else None,
                    cache_key=key,
                    request_id=rid,
                    priority=priority,
                    deadline=deadline,
                )
            )
    except QueueFullError as exc:
        for f in futures:
            f.cancel()
        _count_failure(state, "queue_full")
        raise ApiError(
            429,
            "the prediction queue is full; retry later",
            code="queue_full",
            headers={"Retry-After": str(max(1, round(exc.retry_after_s)))},
        ) from None
    state.metrics.set_queue_depth(state.batcher.depth)
    timeout = state.config.serving.request_timeout_s
    try:
        rows = await _gather_reporting(state, [p[1] for p in prepared], futures, timeout)
    except DeadlineExceededError:
        _count_failure(state, "deadline")
        raise ApiError(
            503, "the request deadline passed while queued", code="deadline_exceeded"
        ) from None
    except PredictorFailedError as exc:
        _count_failure(state, exc.error.kind)
        raise _map_predictor_error(exc) from None
    except TimeoutError:
        _count_failure(state, "timeout")
        raise ApiError(503, "the predictor did not answer in time", code="timeout") from None
    except ApiError:
        raise
    except Exception:
        _count_failure(state, "unavailable")
        raise ApiError(
            503, "the predictor is unavailable", code="unavailable", headers={"Retry-After": "1"}
        ) from None
    latency_ms = (time.perf_counter() - started) * 1000.0
    out = []
    for (item, _, window, _, _), row in zip(prepared, rows, strict=True):
        state.metrics.observe_prediction(
            latency_ms=latency_ms,
            model_version=row.ref.version,
            batch_size=row.forward_rows,
            queue_wait_ms=row.queue_ms,
            model_ms=row.model_ms,
        )
        out.append(
            {
                "symbol": item.symbol,
                "expected_return": row.expected_return,
                "prob_up": min(1.0, max(0.0, row.prob_up)),
                "horizon_bars": state.horizon_bars(row.ref),
                "as_of": window.as_of,
                "model": {
                    "name": row.ref.name,
                    "version": row.ref.version,
                    "sha256": row.ref.sha256,
                },
            }
        )
    request.state.model_version = rows[-1].ref.version
    request.state.batch_size = rows[-1].forward_rows
    return out


# Failures that say nothing about the model version: the client's own input, name or
# deadline. Everything else (predictor errors, timeouts, an unreachable replica) counts
# against the version in the blue/green health check.
_CLIENT_KINDS = frozenset({"bad_input", "not_found"})


async def _gather_reporting(
    state: GatewayState,
    refs: list[ModelRef],
    futures: list[asyncio.Future[RowResult]],
    limit_s: float,
) -> list[RowResult]:
    """Every row's answer; each row's outcome is counted for its version."""
    try:
        # asyncio.timeout rather than wait_for: no extra task per request on the hot path.
        async with asyncio.timeout(limit_s):
            rows: list[RowResult] = (
                [await futures[0]] if len(futures) == 1 else await asyncio.gather(*futures)
            )
    except asyncio.CancelledError:
        raise  # the client went away: that says nothing about the model version
    except BaseException:
        _report_outcomes(state, refs, futures)
        raise
    _report_outcomes(state, refs, futures)
    return rows


def _report_outcomes(
    state: GatewayState, refs: list[ModelRef], futures: list[asyncio.Future[RowResult]]
) -> None:
    for ref, future in zip(refs, futures, strict=False):
        if not future.done():
            continue  # another row failed first; this one's fate is unknown
        if future.cancelled():
            state.record_outcome(ref, ok=False)  # the request timed out
            continue
        exc = future.exception()
        client_side = isinstance(exc, DeadlineExceededError) or (
            isinstance(exc, PredictorFailedError) and exc.error.kind in _CLIENT_KINDS
        )
        if not client_side:
            state.record_outcome(ref, ok=exc is None)


def _count_failure(state: GatewayState, status: str) -> None:
    state.metrics.observe_prediction(
        latency_ms=0.0,
        model_version="-",
        batch_size=None,
        queue_wait_ms=None,
        model_ms=None,
        status=status,
    )


def _map_predictor_error(exc: PredictorFailedError) -> ApiError:
    kind = exc.error.kind
    if kind == "not_found":
        return ApiError(404, exc.error.message, code="model_not_found")
    if kind == "invalid_model":
        return ApiError(503, "the requested model failed validation", code="invalid_model")
    if kind == "not_ready":
        return ApiError(
            503, "the model is not loaded yet", code="not_ready", headers={"Retry-After": "5"}
        )
    if kind == "bad_input":
        return ApiError(422, exc.error.message, code="invalid_features")
    return ApiError(503, "the predictor failed", code="unavailable", headers={"Retry-After": "1"})


def _priority(principal_priority: int, header: int | None) -> int:
    return principal_priority if header is None else min(principal_priority, header)


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=_ERRORS,
    summary="Predict the next move of one instrument from its last 64 OHLCV bars",
    openapi_extra=openapi_body(PredictRequest),
)
async def predict(request: Request, principal: PredictPrincipal) -> FastJSONResponse:
    state = _state(request)
    body = await read_model(request, PredictRequest)
    priority = _priority(principal.priority, priority_hint(request))
    deadline = deadline_hint(request)
    [pred] = await _predict_rows(request, state, [body], priority=priority, deadline=deadline)
    pred["request_id"] = getattr(request.state, "request_id", None)
    return FastJSONResponse(pred)


@router.post(
    "/predict/batch",
    response_model=BatchPredictResponse,
    responses=_ERRORS,
    summary="Predict many instruments in one call; results come back in request order",
    openapi_extra=openapi_body(BatchPredictRequest),
)
async def predict_batch(request: Request, principal: PredictPrincipal) -> FastJSONResponse:
    state = _state(request)
    body = await read_model(request, BatchPredictRequest)
    priority = _priority(principal.priority, priority_hint(request))
    deadline = deadline_hint(request)
    limit = state.config.network_security.limits.max_batch_symbols
    if len(body.items) > limit:
        raise ApiError(
            422,
            f"at most {limit} items per batch request, got {len(body.items)}",
            code="too_many_items",
        )
    preds = await _predict_rows(request, state, body.items, priority=priority, deadline=deadline)
    return FastJSONResponse(
        {"request_id": getattr(request.state, "request_id", None), "predictions": preds}
    )
