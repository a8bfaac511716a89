"""Fakes shared by the test suites (the one place they live).

``FakePredictor`` stands in for the Serve predictor behind the gateway's batcher: it
answers with a fixed, cheap function of the features so tests can check which row got
which answer, records every call, and can be told to stall or fail.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from model.common.failures import FailureKind
from model.common.protocol import BatchResult, PredictBatch, PredictError, PredictorStatus
from model.common.refs import ModelRef

FAKE_REF = ModelRef(name="cnn_lstm", version="0.0.1", sha256="a" * 64)


def fake_outputs(features: np.ndarray) -> np.ndarray:
    """Row i's answer depends only on row i: (mean of its last feature row, sigmoid)."""
    signal = features[:, -1, :].astype(np.float64).mean(axis=1)
    return np.stack([signal, 1.0 / (1.0 + np.exp(-signal))], axis=1)


FAKE_HORIZON_BARS = 1


@dataclass
class FakePredictor:
    ready: bool = True
    ref: ModelRef = FAKE_REF
    known: set[ModelRef] = field(default_factory=set)
    delay_s: float = 0.0
    fail_with: PredictError | None = None
    calls: list[PredictBatch] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set, calls wait for it (to build a backlog)

    async def dispatch(self, batch: PredictBatch) -> BatchResult | PredictError:
        self.calls.append(batch)
        if self.gate is not None:
            await self.gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            return self.fail_with
        if batch.ref != self.ref and batch.ref not in self.known:
            return PredictError(FailureKind.MODEL_NOT_FOUND, f"unknown model {batch.ref.key}")
        return BatchResult(
            ref=batch.ref,
            outputs=fake_outputs(batch.features),
            forward_rows=batch.rows,
            model_ms=0.1,
            horizon_bars=FAKE_HORIZON_BARS,
        )

    async def status(self) -> PredictorStatus:
        if not self.ready:
            return PredictorStatus(ready=False, stage="loading")
        return PredictorStatus(ready=True, stage="ready", model=self.ref)
