"""``POST /predict`` and ``POST /predict/batch``: parse -> ``predict_rows`` -> render."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.body import openapi_body
from app.api.deps import BatchPredictCall, Call, PredictCall
from app.api.errors import FastJSONResponse, prediction_error_responses
from app.gateway.predict import Prediction, predict_rows
from app.gateway.rows import RowResult
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
async def predict(request: Request, call: PredictCall) -> FastJSONResponse:
    [pred], rows = await _predict(call, [call.body])
    _note_served(request, rows)
    return FastJSONResponse({**pred, "request_id": call.request_id or None})


@router.post(
    "/predict/batch",
    response_model=BatchPredictResponse,
    responses=prediction_error_responses(),
    summary="Predict many instruments in one call; results come back in request order",
    openapi_extra=openapi_body(BatchPredictRequest),
)
async def predict_batch(request: Request, call: BatchPredictCall) -> FastJSONResponse:
    preds, rows = await _predict(call, call.body.items)
    _note_served(request, rows)
    return FastJSONResponse({"request_id": call.request_id or None, "predictions": preds})


async def _predict(
    call: Call[PredictRequest] | Call[BatchPredictRequest], items: list[PredictRequest]
) -> tuple[list[Prediction], list[RowResult]]:
    return await predict_rows(
        call.state,
        items,
        priority=call.priority,
        deadline=call.deadline,
        request_id=call.request_id,
        principal_id=call.principal.subject,
    )


def _note_served(request: Request, rows: list[RowResult]) -> None:
    """What the access line reports: the version and batch the request rode in."""
    request.state.model_version = rows[-1].ref.version
    request.state.batch_size = rows[-1].forward_rows
