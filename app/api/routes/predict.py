"""``POST /predict`` and ``POST /predict/batch``: parse -> ``predict_rows`` -> render."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.body import openapi_body
from app.api.deps import (
    BatchPredictBody,
    Deadline,
    Gateway,
    PredictBody,
    PredictPrincipal,
    Priority,
    RequestId,
)
from app.api.errors import FastJSONResponse, prediction_error_responses
from app.gateway.batcher import RowResult
from app.gateway.predict import predict_rows
from app.gateway.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    PredictRequest,
    PredictResponse,
)

router = APIRouter(tags=["predictions"])


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=prediction_error_responses(),
    summary="Predict the next move of one instrument from its last 64 OHLCV bars",
    openapi_extra=openapi_body(PredictRequest),
)
async def predict(
    request: Request,
    principal: PredictPrincipal,
    state: Gateway,
    body: PredictBody,
    priority: Priority,
    deadline: Deadline,
    rid: RequestId,
) -> FastJSONResponse:
    [pred], rows = await predict_rows(
        state,
        [body],
        priority=priority,
        deadline=deadline,
        request_id=rid or "",
        principal_id=principal.subject,
    )
    _note_served(request, rows)
    return FastJSONResponse({**pred, "request_id": rid})


@router.post(
    "/predict/batch",
    response_model=BatchPredictResponse,
    responses=prediction_error_responses(),
    summary="Predict many instruments in one call; results come back in request order",
    openapi_extra=openapi_body(BatchPredictRequest),
)
async def predict_batch(
    request: Request,
    principal: PredictPrincipal,
    state: Gateway,
    body: BatchPredictBody,
    priority: Priority,
    deadline: Deadline,
    rid: RequestId,
) -> FastJSONResponse:
    preds, rows = await predict_rows(
        state,
        body.items,
        priority=priority,
        deadline=deadline,
        request_id=rid or "",
        principal_id=principal.subject,
    )
    _note_served(request, rows)
    return FastJSONResponse({"request_id": rid, "predictions": preds})


def _note_served(request: Request, rows: list[RowResult]) -> None:
    """What the access line reports: the version and batch the request rode in."""
    request.state.model_version = rows[-1].ref.version
    request.state.batch_size = rows[-1].forward_rows
