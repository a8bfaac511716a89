"""The gateway's shadow scorer: a sample of blue's rows scored on green off the response
path; answers compared, green's failures counted and never raised, shed under load."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import numpy as np
import pytest

from app.config import Metrics
from app.gateway.rollout_router import RolloutRouter
from app.gateway.rows import RowResult
from app.gateway.shadow import ShadowScorer
from app.observability.metrics import GatewayMetrics
from app.observability.process_metrics import new_registry
from model.common.features import NUM_FEATURES, WINDOW
from model.common.protocol import BatchResult, PredictBatch, PredictError, Routing
from model.common.refs import ModelRef
from tests.fakes import FAKE_REF, FakePredictor, fake_outputs

GREEN = ModelRef(name="cnn_lstm", version="0.0.2", sha256="b" * 64)


def _row(value: float, ref: ModelRef = FAKE_REF) -> RowResult:
    feats = np.full((WINDOW, NUM_FEATURES), value, dtype=np.float32)
    er, pu = fake_outputs(feats[None])[0]
    return RowResult(ref, float(er), float(pu), 1, 1, 0.1, 0.0, features=feats)


@dataclass
class Green(FakePredictor):
    """Green as the fake predictor, optionally flipping the sign of every answer."""

    flip: bool = False

    async def dispatch(self, batch: PredictBatch) -> BatchResult | PredictError:
        result = await super().dispatch(batch)
        if self.flip and isinstance(result, BatchResult):
            out = result.outputs.copy()
            out[:, 0], out[:, 1] = -out[:, 0], 1.0 - out[:, 1]
            return BatchResult(result.ref, out, result.forward_rows, result.model_ms, 1)
        return result


def _scorer(
    green: FakePredictor,
    *,
    pct: float = 100.0,
    busy: bool = False,
    capacity: int = 256,
    timeout_s: float = 30.0,
) -> tuple[ShadowScorer, GatewayMetrics]:
    metrics = GatewayMetrics(new_registry(), Metrics())
    routing = Routing(blue=FAKE_REF, green=GREEN, phase="shadowing", shadow_pct=pct)
    scorer = ShadowScorer(
        green.dispatch,  # type: ignore[arg-type]
        lambda: routing,
        busy=lambda: busy,
        metrics=metrics.shadow,
        max_batch_size=8,
        capacity=capacity,
        rng=random.Random(7),
        timeout_s=timeout_s,
    )
    return scorer, metrics


def _sample(metrics: GatewayMetrics, result: str) -> float:
    value = metrics.registry.get_sample_value("shadow_rows_total", {"result": result})
    return value or 0.0


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_an_identical_green_agrees_on_every_row() -> None:
    green = Green(ref=GREEN)
    scorer, metrics = _scorer(green)
    values = np.linspace(-2, 2, 20)
    scorer.offer([_row(v) for v in values])
    await _settle()
    [report] = scorer.take().values()
    assert report["rows"] == 20
    assert report["agree"] == 20
    assert report["abs_diff_prob_up"] == pytest.approx(0.0, abs=1e-6)
    assert [c.rows for c in green.calls] == [8, 8, 4], "scored in batches"
    assert {c.ref for c in green.calls} == {GREEN}
    assert _sample(metrics, "agree") == 20
    assert scorer.take() == {}, "take resets the tally"
    await scorer.stop()


async def test_a_sign_flipping_green_disagrees_and_its_differences_are_measured() -> None:
    scorer, metrics = _scorer(Green(ref=GREEN, flip=True))
    scorer.offer([_row(v) for v in (-1.0, -0.5, 0.5, 1.0)])
    await _settle()
    [report] = scorer.take().values()
    assert (report["rows"], report["agree"]) == (4, 0)
    assert report["abs_diff_expected_return"] == pytest.approx(2 * (1.0 + 0.5 + 0.5 + 1.0))
    assert _sample(metrics, "disagree") == 4
    await scorer.stop()


async def test_only_a_sample_of_blue_rows_is_scored() -> None:
    green = Green(ref=GREEN)
    scorer, _ = _scorer(green, pct=20.0)
    scorer.offer([_row(0.1 * i) for i in range(500)])
    scorer.offer([_row(0.3, ref=GREEN)])  # a row green itself served: nothing to compare
    await _settle()
    [report] = scorer.take().values()
    assert 60 <= report["rows"] <= 140, report
    assert all(c.ref == GREEN for c in green.calls)
    await scorer.stop()


async def test_green_failures_are_counted_never_raised() -> None:
    green = Green(ref=GREEN, fail_with=PredictError("unavailable", "boom"))  # type: ignore[arg-type]
    scorer, metrics = _scorer(green)
    scorer.offer([_row(0.5), _row(0.6)])
    await _settle()
    [report] = scorer.take().values()
    assert (report["rows"], report["errors"]) == (0, 2)
    assert _sample(metrics, "error") == 2
    await scorer.stop()


async def test_a_green_that_hangs_costs_its_batch_not_the_scoring_after_it() -> None:
    green = Green(ref=GREEN, gate=asyncio.Event())  # green does not answer...
    scorer, metrics = _scorer(green, timeout_s=0.05)
    scorer.offer([_row(0.5), _row(0.6)])
    await _settle()
    green.gate.set()  # ...until now
    scorer.offer([_row(0.7)])
    await _settle()
    [report] = scorer.take().values()
    assert (report["rows"], report["errors"]) == (1, 2)
    assert _sample(metrics, "error") == 2
    await scorer.stop()


async def test_offer_never_waits_for_green_and_sheds_past_its_capacity() -> None:
    green = Green(ref=GREEN, gate=asyncio.Event())  # green never answers
    scorer, metrics = _scorer(green, capacity=16)
    scorer.offer([_row(0.1)])
    await _settle()  # one batch is stuck in flight at green
    scorer.offer([_row(0.1 * i) for i in range(40)])  # returns at once
    assert _sample(metrics, "shed") == 40 - 16
    [report] = scorer.take().values()
    assert report["shed"] == 24
    await scorer.stop()


async def test_all_shadow_work_is_shed_while_blue_has_a_queue() -> None:
    green = Green(ref=GREEN)
    scorer, metrics = _scorer(green, busy=True)
    scorer.offer([_row(0.1 * i) for i in range(10)])
    await _settle()
    assert green.calls == [], "green took no capacity while blue was backed up"
    assert _sample(metrics, "shed") == 10
    await scorer.stop()


async def test_no_shadow_routing_means_no_work() -> None:
    green = Green(ref=GREEN)
    scorer, _ = _scorer(green, pct=0.0)
    scorer.offer([_row(0.5)])
    await _settle()
    assert green.calls == []
    assert scorer.take() == {}


async def test_the_router_pushes_shadow_reports_and_keeps_them_when_the_push_fails() -> None:
    pushed: list[tuple[str, dict[str, float]]] = []
    failing = True

    async def push_shadow(key: str, report: dict[str, float]) -> None:
        if failing:
            raise ConnectionError("controller restarting")
        pushed.append((key, report))

    async def fetch() -> Routing:
        return Routing(blue=FAKE_REF)

    async def push(counts: dict[str, tuple[int, int]]) -> None:
        return None

    router = RolloutRouter(fetch, push, push_shadow=push_shadow)
    reports = [{GREEN.key: {"rows": 3.0, "agree": 2.0}}, {GREEN.key: {"rows": 1.0, "agree": 1.0}}]
    router.shadow_source = lambda: reports.pop(0) if reports else {}
    await router.flush()
    assert pushed == []
    failing = False
    await router.flush()
    assert pushed == [(GREEN.key, {"rows": 4.0, "agree": 3.0})], "nothing reported was lost"
    await router.flush()
    assert len(pushed) == 1
