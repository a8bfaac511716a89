"""``GET /healthz`` (liveness) and ``GET /ready`` (readiness), spec section 5.

Liveness says only that this gateway process answers; it must stay cheap and must not
depend on the model, or a slow model load would get healthy gateways restarted.
Readiness says the predictor has loaded, validated and warmed the model, from the status
the gateway polls in the background (at most one poll period old): a probe never waits
for a call to the predictor, so it answers at once even while the predictor is busy.
A stopping gateway replica is not ready.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from app.api.errors import error_response
from app.gateway.schemas import ErrorResponse, HealthResponse, ModelInfo, ReadyResponse
from app.gateway.state import GatewayState

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse, summary="Liveness: the gateway answers")
async def healthz() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={
        503: {"model": ErrorResponse, "description": "Model not loaded, validated and warm"}
    },
    summary="Readiness: the model is loaded, validated and warmed",
)
async def ready(request: Request) -> object:
    state: GatewayState = request.app.state.gateway
    readiness = state.readiness
    status = readiness.status
    if time.monotonic() - readiness.checked_at > 2 * readiness.period_s + readiness.timeout_s:
        status = await readiness.refresh()  # the poller is not running (or is stuck)
    if state.stopping or not status.ready or status.model is None:
        # The stage only: /ready answers anyone, and a load error names the server's
        # paths. The error itself is on /stats (predictor.error) and in the logs.
        detail = f"predictor {status.stage}"
        if state.stopping:
            detail = "this gateway replica is stopping"
        return error_response(
            503,
            detail,
            code="not_ready",
            request_id=getattr(request.state, "request_id", None),
            headers={"Retry-After": "5"},
        )
    m = status.model
    return ReadyResponse(
        ready=True,
        stage=status.stage,
        model=ModelInfo(name=m.name, version=m.version, sha256=m.sha256),
    )
