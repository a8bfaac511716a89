"""CUDA graphs per batch-size bucket: bucketing, padding, the golden check, the fallback.

The capture is a parameter of :class:`GraphedForward`; here a CPU stand-in plays the
graph (static input and output buffers, replay recomputes in place), so everything but
the CUDA calls themselves runs on any machine. ``python -m model.gpu_check`` times the
real thing on a GPU (its ``predict`` rows run after the warm-up that captures).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from app.config import ServiceConfig
from app.config.env import Settings
from app.serve.predictor_settings import predictor_settings
from model.common.features import NUM_FEATURES, WINDOW, compute_features, sliding_windows
from model.common.gpu import GpuOptions
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.cuda_graphs import DEFAULT_BUCKETS, Forward, GraphedForward
from model.data import synthetic_bars
from model.runtime import LoadedModel, load_model
from model.service import PredictorSettings


class CpuGraphs:
    """Capture stand-in: remembers the forward and its buffers, replays into the same
    output tensor (what a CUDA graph does), counts captures."""

    def __init__(self, corrupt: float = 0.0, fail: bool = False) -> None:
        self.captured: list[int] = []
        self._corrupt = corrupt
        self._fail = fail

    def __call__(
        self, forward: Forward, static_x: torch.Tensor
    ) -> tuple[Callable[[], None], torch.Tensor]:
        if self._fail:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        self.captured.append(int(static_x.shape[0]))
        with torch.no_grad():
            out = forward(static_x).clone()

        def replay() -> None:
            with torch.no_grad():
                out.copy_(forward(static_x) + self._corrupt)

        return replay, out


def _mixing(x: torch.Tensor) -> torch.Tensor:
    """Each row's sum plus the whole batch's: stale padding would show in every row."""
    return x.sum(dim=(1, 2))[:, None] + x.sum()


def _features(n: int, seed: int = 0) -> np.ndarray:
    return compute_features(sliding_windows(synthetic_bars(WINDOW + n - 1, seed=seed)))


@pytest.fixture
def loaded(registry: ModelRegistry, random_ref: ModelRef) -> LoadedModel:
    return load_model(registry, random_ref)


def test_a_batch_goes_to_the_smallest_bucket_that_holds_it() -> None:
    capture = CpuGraphs()
    graphs = GraphedForward(_mixing, (3, 2), torch.device("cpu"), (8, 1, 4, 4, 2), capture)
    assert graphs.buckets == (1, 2, 4, 8)
    assert capture.captured == [1, 2, 4, 8]  # one capture per bucket, duplicates dropped
    assert [graphs.bucket_for(n) for n in (1, 2, 3, 4, 5, 8, 9)] == [1, 2, 4, 4, 8, 8, None]


def test_a_smaller_batch_after_a_larger_one_sees_zero_padding_not_the_old_rows() -> None:
    graphs = GraphedForward(_mixing, (3, 2), torch.device("cpu"), (4,), CpuGraphs())
    big = np.random.default_rng(0).standard_normal((4, 3, 2)).astype(np.float32)
    small = np.random.default_rng(1).standard_normal((3, 3, 2)).astype(np.float32)
    np.testing.assert_allclose(graphs.run(big), _mixing(torch.from_numpy(big)), rtol=1e-6)
    padded = torch.from_numpy(np.concatenate([small, np.zeros((1, 3, 2), np.float32)]))
    out = graphs.run(small)
    assert out is not None
    assert out.shape == (3, 1)
    np.testing.assert_allclose(out, _mixing(padded)[:3], rtol=1e-6)


def test_each_answer_is_its_own_array_not_a_view_of_the_staging_buffer() -> None:
    graphs = GraphedForward(_mixing, (3, 2), torch.device("cpu"), (2,), CpuGraphs())
    first = graphs.run(np.ones((2, 3, 2), np.float64))  # float64 rows are cast on the way in
    assert first is not None
    assert first.dtype == np.float32
    kept = first.copy()
    graphs.run(np.full((2, 3, 2), 5.0, np.float32))
    np.testing.assert_array_equal(first, kept)  # the next replay did not overwrite it


def test_no_bucket_for_an_oversized_or_empty_batch() -> None:
    graphs = GraphedForward(_mixing, (3, 2), torch.device("cpu"), (1, 2), CpuGraphs())
    assert graphs.run(np.zeros((3, 3, 2), np.float32)) is None
    assert graphs.run(np.zeros((0, 3, 2), np.float32)) is None


@pytest.mark.parametrize("buckets", [(), (0, 4), (-1,)])
def test_buckets_must_be_positive_sizes(buckets: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="buckets"):
        GraphedForward(_mixing, (3, 2), torch.device("cpu"), buckets, CpuGraphs())


def test_a_model_serving_from_graphs_answers_as_the_eager_forward(loaded: LoadedModel) -> None:
    batches = {n: _features(n, seed=n) for n in (1, 5, 32, 40)}
    eager = {n: loaded.predict(x) for n, x in batches.items()}
    capture = CpuGraphs()
    assert loaded.capture_graphs(capture=capture) is True
    assert loaded.graph_buckets == DEFAULT_BUCKETS
    assert capture.captured == list(DEFAULT_BUCKETS)
    for n, x in batches.items():  # 40 rows: above the largest bucket, so eager
        np.testing.assert_allclose(loaded.predict(x), eager[n], rtol=0, atol=1e-6)
    assert loaded.predict(np.zeros((0, WINDOW, NUM_FEATURES), np.float32)).shape == (0, 2)


@pytest.mark.parametrize(
    ("capture", "warning"),
    [
        (CpuGraphs(corrupt=1.0), "CUDA graphs deviate"),  # disagree with the golden rows
        (CpuGraphs(fail=True), "capture failed (CUDA error: operation not permitted"),
    ],
    ids=["deviating", "failed"],
)
def test_graphs_that_cannot_be_trusted_leave_forwards_eager(
    loaded: LoadedModel, capture: CpuGraphs, warning: str, caplog: pytest.LogCaptureFixture
) -> None:
    x = _features(8)
    eager = loaded.predict(x)
    with caplog.at_level(logging.WARNING, logger="model.runtime"):
        assert loaded.capture_graphs(capture=capture) is False
    assert warning in caplog.text
    assert "forwards stay eager" in caplog.text
    assert loaded.graph_buckets == ()
    np.testing.assert_array_equal(loaded.predict(x), eager)


def test_warmup_on_a_cpu_captures_nothing(loaded: LoadedModel) -> None:
    loaded.warmup((1, 4))
    assert loaded.warmed
    assert loaded.graph_buckets == ()


def test_the_golden_check_runs_eagerly_even_while_graphs_serve(loaded: LoadedModel) -> None:
    before = loaded.golden_deviation()
    # Graphs that are right when captured and wrong ever after: validation must not see them.
    capture = CpuGraphs()
    assert loaded.capture_graphs(capture=capture) is True
    capture._corrupt = 1.0
    assert loaded.golden_deviation() == before
    loaded.validate()  # raises if the golden rows went through the corrupted graphs


def test_the_config_switch_reaches_the_predictors_gpu_options(tmp_path: Path) -> None:
    def gpu(config: dict[str, object]) -> GpuOptions:
        full = ServiceConfig.model_validate({"model_registry": {"path": str(tmp_path)}, **config})
        return PredictorSettings.from_dict(predictor_settings(full, Settings())).gpu

    assert gpu({}).cuda_graphs is True
    assert gpu({"gpu_optimization": {"cuda_graphs": False}}).cuda_graphs is False
