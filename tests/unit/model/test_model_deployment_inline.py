"""The predictor replica's idle fast path (``model.deployment``): which calls skip the
batch queue and its worker thread, and that they get the same answer as the queue gives."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.common.features import NUM_FEATURES, WINDOW
from model.common.protocol import BatchResult, PredictBatch, PredictError
from model.common.refs import ModelRef
from model.deployment import LINE_AFTER_ANSWER_S, PredictorDeployment
from model.service import PredictorService, PredictorSettings


class _BatchRecorder:
    """Stands in for the replica's Ray metrics (``app.observability.replica_metrics``)."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, float]] = []

    def observe_batch(self, *, size: int, model_ms: float) -> None:
        self.batches.append((size, model_ms))

    def close(self) -> None:
        pass


class _Replica:
    """A predictor replica without Serve: the deployment's class, its service loaded,
    and ``predict_batch`` (Serve's batch queue) replaced by a recorder."""

    def __init__(self, registry_root: Path, inline_rows: int) -> None:
        base: Any = PredictorDeployment.func_or_class

        class Unserved(base):  # type: ignore[misc,valid-type]
            def __del__(self) -> None:  # the replica's is a coroutine for Serve to await
                pass

        self.deployment = object.__new__(Unserved)
        self.deployment.service = PredictorService(
            PredictorSettings(
                registry_path=str(registry_root),
                inline_idle_rows=inline_rows,
                warmup_batch_sizes=(1,),
            )
        )
        self.deployment.service.load_default()
        self.deployment._queued = 0
        self.deployment.metrics = self.metrics = _BatchRecorder()
        self.queued_calls: list[PredictBatch] = []

        async def through_the_queue(batch: PredictBatch) -> BatchResult | PredictError:
            self.queued_calls.append(batch)
            results = self.deployment.service.predict_batches([batch])
            return self.deployment._answers([batch], results)[0]  # type: ignore[no-any-return]

        self.deployment.predict_batch = through_the_queue

    def predict(self, batch: PredictBatch) -> BatchResult | PredictError:
        result: BatchResult | PredictError = asyncio.run(self.deployment.predict(batch))
        return result


def _batch(ref: ModelRef, rows: int) -> PredictBatch:
    rng = np.random.default_rng(rows)
    features = rng.normal(size=(rows, WINDOW, NUM_FEATURES)).astype(np.float32)
    return PredictBatch(ref=ref, features=features, request_ids=tuple(f"r{i}" for i in range(rows)))


@pytest.fixture
def replica(registry_root: Path, random_ref: ModelRef) -> _Replica:
    return _Replica(registry_root, inline_rows=8)


def test_an_idle_replica_answers_a_small_call_without_the_queue_and_with_the_same_result(
    replica: _Replica, random_ref: ModelRef
) -> None:
    batch = _batch(random_ref, 3)
    inline = replica.predict(batch)
    assert replica.queued_calls == []
    assert isinstance(inline, BatchResult)
    assert (inline.ref, inline.forward_rows) == (random_ref, 3)
    replica.deployment._queued = 1  # busy now: the same call takes the queue
    queued = replica.predict(batch)
    assert replica.queued_calls == [batch]
    assert isinstance(queued, BatchResult)
    np.testing.assert_array_equal(inline.outputs, queued.outputs)


def test_the_socket_gets_an_idle_replicas_answer_at_once_and_none_when_busy(
    replica: _Replica, random_ref: ModelRef
) -> None:
    # What model.socket_server calls (on the replica's loop) as it reads a call: the
    # answer, or None for the queue.
    async def on_the_loop(batch: PredictBatch) -> BatchResult | PredictError | None:
        answer: BatchResult | PredictError | None = replica.deployment.answer_now(batch)
        return answer

    batch = _batch(random_ref, 2)
    now = asyncio.run(on_the_loop(batch))
    assert isinstance(now, BatchResult)
    assert now.forward_rows == 2
    replica.deployment._queued = 1
    assert asyncio.run(on_the_loop(batch)) is None
    replica.deployment._queued = 0
    assert asyncio.run(on_the_loop(_batch(random_ref, 9))) is None  # above the limit
    assert replica.queued_calls == []


def test_a_busy_replica_queues_every_call_so_it_joins_a_batch(
    replica: _Replica, random_ref: ModelRef
) -> None:
    replica.deployment._queued = 2
    batch = _batch(random_ref, 1)
    replica.predict(batch)
    assert replica.queued_calls == [batch]
    assert replica.deployment._queued == 2  # the queued call's count came back down


def test_a_call_above_the_row_limit_takes_the_queue(
    replica: _Replica, random_ref: ModelRef
) -> None:
    big = _batch(random_ref, 9)
    assert isinstance(replica.predict(big), BatchResult)
    assert replica.queued_calls == [big]
    assert replica.deployment._queued == 0


def test_a_call_for_a_model_not_loaded_never_loads_on_the_event_loop(
    replica: _Replica, random_ref: ModelRef
) -> None:
    elsewhere = ModelRef(random_ref.name, "9.9.9", "0" * 64)
    replica.predict(_batch(elsewhere, 1))
    assert [b.ref for b in replica.queued_calls] == [elsewhere]


def test_a_limit_of_zero_turns_the_fast_path_off(registry_root: Path, random_ref: ModelRef) -> None:
    replica = _Replica(registry_root, inline_rows=0)
    batch = _batch(random_ref, 1)
    assert isinstance(replica.predict(batch), BatchResult)
    assert replica.queued_calls == [batch]


def test_a_lone_calls_batch_line_is_written_after_its_answer_leaves(
    replica: _Replica, random_ref: ModelRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "model.common.log_lines._writer",
        lambda logger, event, fields: lines.append({"logger": logger, **fields}),
    )
    batch = _batch(random_ref, 2)

    async def call() -> tuple[int, int, int]:
        await replica.deployment.predict(batch)
        at_answer = len(lines)  # the caller writes its answer here
        await asyncio.sleep(0)  # the loop turns: the gateway reads the answer now
        after_a_turn = len(lines)
        await asyncio.sleep(LINE_AFTER_ANSWER_S * 2)
        return at_answer, after_a_turn, len(lines)

    assert asyncio.run(call()) == (0, 0, 1)
    assert lines[0]["logger"] == "model.batches"
    assert lines[0]["request_ids"] == ["r0", "r1"]
    assert (lines[0]["calls"], lines[0]["rows"], lines[0]["failed"]) == (1, 2, 0)


def test_each_forward_is_recorded_once_with_its_rows_and_time_a_lone_one_after_its_answer(
    replica: _Replica, random_ref: ModelRef
) -> None:
    async def calls() -> tuple[int, int]:
        await replica.deployment.predict(_batch(random_ref, 2))  # inline: recorded later
        at_answer = len(replica.metrics.batches)
        await asyncio.sleep(LINE_AFTER_ANSWER_S * 2)
        after = len(replica.metrics.batches)
        replica.deployment._queued = 1  # busy: the queue's forward records at once
        await replica.deployment.predict(_batch(random_ref, 5))
        replica.deployment._queued = 0
        return at_answer, after

    assert asyncio.run(calls()) == (0, 1)
    assert [size for size, _ in replica.metrics.batches] == [2, 5]
    assert all(model_ms > 0 for _, model_ms in replica.metrics.batches)


def test_a_failed_forward_records_no_batch(replica: _Replica, random_ref: ModelRef) -> None:
    elsewhere = ModelRef(random_ref.name, "9.9.9", "0" * 64)  # not in the registry
    assert isinstance(replica.predict(_batch(elsewhere, 1)), PredictError)
    assert replica.metrics.batches == []


def test_a_keep_warm_call_is_served_and_counted_nowhere(
    replica: _Replica, random_ref: ModelRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """app.gateway.keep_warm: a warm call runs the forward like any other, but the replica
    writes no batch line, records no metrics and reports no rows to the autoscaler."""
    lines: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "model.common.log_lines._writer",
        lambda logger, event, fields: lines.append({"logger": logger, **fields}),
    )
    plain = _batch(random_ref, 1)
    warm = PredictBatch(ref=random_ref, features=plain.features, warm=True)
    service = replica.deployment.service

    async def calls() -> list[BatchResult | PredictError]:
        inline = await replica.deployment.predict(warm)  # idle: answered on the loop
        replica.deployment._queued = 1  # busy: through the queue
        queued = await replica.deployment.predict(warm)
        replica.deployment._queued = 0
        real = await replica.deployment.predict(plain)  # counted, for comparison
        await asyncio.sleep(LINE_AFTER_ANSWER_S * 2)
        return [inline, queued, real]

    answers = asyncio.run(calls())
    expected = answers[-1]
    assert all(isinstance(a, BatchResult) for a in answers)
    assert isinstance(expected, BatchResult)
    for answer in answers[:2]:
        assert isinstance(answer, BatchResult)
        np.testing.assert_allclose(answer.outputs, expected.outputs)
    assert (service.batches, service.rows) == (1, 1)  # the real call only
    replica.deployment.socket = None
    assert replica.deployment.record_autoscaling_stats()["requests_total"] == 1.0
    assert replica.metrics.batches == [(1, pytest.approx(expected.model_ms))]
    assert [line["rows"] for line in lines] == [1]
