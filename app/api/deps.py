"""Every request-scoped dependency of the API, as an ``Annotated`` alias.

Routes declare what they need in their signature and FastAPI resolves it once per
request (a dependency used twice, like the principal behind ``Priority``, is cached)::

    async def predict(principal: PredictPrincipal, state: Gateway, body: PredictBody): ...

All of them are ``async def``: a plain ``def`` dependency would run on a worker thread.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.body import deadline_hint, priority_hint, read_model
from app.gateway.schemas import BatchPredictRequest, PredictRequest
from app.gateway.state import GatewayState
from app.security.dependencies import MetricsAccess, PredictPrincipal, StatsPrincipal

__all__ = [
    "BatchPredictBody",
    "Deadline",
    "Gateway",
    "MetricsAccess",
    "PredictBody",
    "PredictPrincipal",
    "Priority",
    "RequestId",
    "StatsPrincipal",
]


async def _gateway(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


async def _request_id(request: Request) -> str | None:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else None


async def _predict_body(request: Request) -> PredictRequest:
    return await read_model(request, PredictRequest)


async def _batch_body(request: Request) -> BatchPredictRequest:
    return await read_model(request, BatchPredictRequest)


async def _priority(request: Request, principal: PredictPrincipal) -> int:
    """The key's priority; ``X-Priority`` can only lower it."""
    hint = priority_hint(request)
    return principal.priority if hint is None else min(principal.priority, hint)


async def _deadline(request: Request) -> float | None:
    return deadline_hint(request)


Gateway = Annotated[GatewayState, Depends(_gateway)]
RequestId = Annotated[str | None, Depends(_request_id)]
PredictBody = Annotated[PredictRequest, Depends(_predict_body)]
BatchPredictBody = Annotated[BatchPredictRequest, Depends(_batch_body)]
Priority = Annotated[int, Depends(_priority)]
Deadline = Annotated[float | None, Depends(_deadline)]
