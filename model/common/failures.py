"""The one vocabulary of prediction failures, shared by the predictor and the gateway.

The predictor names what went wrong with one of these (``PredictError.kind``, returned
across the handle, never raised); the gateway adds its own (queue full, deadline, not
ready) and maps every kind to an HTTP answer, a metric status and blue/green accounting
in one table (:mod:`app.gateway.failures`). A kind's value is the error code the client
sees, so the code a test asserts and the kind the code raises are the same string.
"""

from __future__ import annotations

from enum import StrEnum


class FailureKind(StrEnum):
    # The client's own request: says nothing about the model version.
    INVALID_BARS = "invalid_bars"  # the OHLCV window fails validation
    TOO_MANY_ITEMS = "too_many_items"  # /predict/batch over the configured limit
    MODEL_NOT_FOUND = "model_not_found"  # no such model name or version
    INVALID_FEATURES = "invalid_features"  # the predictor refused the feature array
    DEADLINE_EXCEEDED = "deadline_exceeded"  # the client's deadline passed first
    # Load shedding and start-up.
    QUEUE_FULL = "queue_full"
    NOT_READY = "not_ready"
    # The model version or the predictor failed.
    INVALID_MODEL = "invalid_model"  # the artifact failed validation
    TIMEOUT = "timeout"  # no answer within the gateway's own request timeout
    UNAVAILABLE = "unavailable"  # the predictor failed or could not be reached
