"""Request and response types of the public API (also the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/=-]{0,31}$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

Symbol = Annotated[
    str,
    Field(
        min_length=1,
        max_length=32,
        pattern=SYMBOL_PATTERN,
        description="Instrument identifier, e.g. AAPL or EURUSD",
    ),
]
ModelName = Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]

_EXAMPLE_BARS = 64


class PredictRequest(BaseModel):
    """One instrument's most recent OHLCV bars, oldest first, in columnar arrays.

    At least 64 bars (the model's window); only the last 64 are used. ``timestamps`` are
    Unix epoch seconds or milliseconds and must be strictly increasing.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "symbol": "EURUSD",
                "timestamps": [1_700_000_000 + 3600 * i for i in range(_EXAMPLE_BARS)],
                "open": [1.10] * _EXAMPLE_BARS,
                "high": [1.11] * _EXAMPLE_BARS,
                "low": [1.09] * _EXAMPLE_BARS,
                "close": [1.105] * _EXAMPLE_BARS,
                "volume": [1000.0] * _EXAMPLE_BARS,
            }
        },
    )

    symbol: Symbol
    timestamps: list[int] = Field(min_length=1)
    open: list[float] = Field(min_length=1)
    high: list[float] = Field(min_length=1)
    low: list[float] = Field(min_length=1)
    close: list[float] = Field(min_length=1)
    volume: list[float] = Field(min_length=1)
    model: ModelName | None = Field(None, description="Model name (default: the one in service)")
    version: ModelName | None = Field(None, description="Model version (default: the default)")


class BatchPredictRequest(BaseModel):
    """Many instruments in one call, e.g. a trading universe scored every bar."""

    model_config = ConfigDict(extra="forbid")

    items: list[PredictRequest] = Field(min_length=1)


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str


class Prediction(BaseModel):
    symbol: str
    expected_return: float = Field(description="Expected log return over the horizon")
    prob_up: float = Field(ge=0, le=1, description="Probability of an up move")
    horizon_bars: int
    as_of: int = Field(description="Timestamp of the last bar used")
    model: ModelInfo


class PredictResponse(Prediction):
    request_id: str | None


class BatchPredictResponse(BaseModel):
    request_id: str | None
    predictions: list[Prediction]


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None = None
    details: list[dict[str, object]] | None = None


class ErrorResponse(BaseModel):
    """The one error shape every route answers with."""

    error: ErrorDetail


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    ready: bool
    stage: str
    model: ModelInfo | None = None
    detail: str | None = None
