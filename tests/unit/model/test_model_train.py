"""Training: no look-ahead, a leak-free split, determinism, and a publishable artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model import train as train_mod
from model.common.features import WINDOW
from model.common.registry import ModelRegistry
from model.data import synthetic_bars
from model.runtime import load_model


@pytest.fixture
def small_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """600 synthetic bars: one epoch takes well under a second."""
    monkeypatch.setattr(train_mod, "load_bars", lambda source, seed=0: synthetic_bars(600, seed))


def test_targets_are_the_returns_after_each_window_without_look_ahead() -> None:
    bars = synthetic_bars(600, seed=1)
    horizon = 3
    train_split, _ = train_mod._make_splits(bars, horizon)
    log_close = np.log(bars[:, 3])
    i = 17
    assert train_split.starts[i] == i
    # Window i ends at bar i + W - 1 and its target runs h bars beyond that.
    assert train_split.returns[i] == pytest.approx(
        log_close[i + WINDOW - 1 + horizon] - log_close[i + WINDOW - 1]
    )
    np.testing.assert_array_equal(train_split.up, (train_split.returns > 0).astype(np.float32))
    # Window i's features see no bar after i + W - 1: changing later bars leaves them be.
    later = bars.copy()
    later[i + WINDOW :, :4] *= 1.5
    np.testing.assert_array_equal(
        train_mod._make_splits(later, horizon)[0].features[i], train_split.features[i]
    )


@pytest.mark.parametrize("horizon", [1, 4])
def test_split_shares_no_bar_between_training_and_held_out_windows(horizon: int) -> None:
    train_split, val_split = train_mod._make_splits(synthetic_bars(800, seed=2), horizon)
    last_train_bar = int(train_split.starts.max()) + WINDOW - 1 + horizon  # target included
    assert int(val_split.starts.min()) > last_train_bar
    assert np.all(np.diff(val_split.starts) == 1)  # held-out part is the contiguous tail
    assert int(val_split.starts.max()) + WINDOW - 1 + horizon == 800 - 1
    assert len(train_split.starts) > 3 * len(val_split.starts)


def test_quick_training_run_publishes_an_artifact_that_verifies_and_loads(
    tmp_path: Path, small_data: None
) -> None:
    lines: list[str] = []
    ref = train_mod.train(
        tmp_path, version="t1", source="synthetic", epochs=1, max_seconds=30, progress=lines.append
    )
    registry = ModelRegistry(tmp_path)
    manifest = registry.verify(ref.name, ref.version)
    assert registry.resolve("cnn_lstm") == ref
    metrics = manifest.training
    assert metrics.data_source == "synthetic"
    assert metrics.epochs == 1
    assert metrics.train_rows > 0
    assert metrics.val_rows >= 4
    assert 0.0 <= metrics.naive_directional_accuracy <= 1.0
    assert manifest.golden.atol == pytest.approx(1e-4)
    model = load_model(registry, ref)
    assert model.golden_deviation() <= 1e-4
    assert any("published" in line for line in lines)


def test_training_is_deterministic_for_a_seed(tmp_path: Path, small_data: None) -> None:
    refs = [
        train_mod.train(tmp_path / str(i), version="v", source="synthetic", epochs=1, seed=5)
        for i in range(2)
    ]
    assert refs[0].sha256 == refs[1].sha256


def test_training_stops_at_the_time_budget(tmp_path: Path, small_data: None) -> None:
    ref = train_mod.train(tmp_path, version="v", source="synthetic", epochs=50, max_seconds=0.0)
    manifest = ModelRegistry(tmp_path).manifest(ref.name, ref.version)
    assert manifest.training.epochs == 0
    assert "stopped by time budget" in manifest.description


def test_train_rejects_an_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown data source"):
        train_mod.train(tmp_path, source="ftse")


def test_main_train_prints_the_ref_and_metrics(
    tmp_path: Path, small_data: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = train_mod.main_train(
        [
            "--registry",
            str(tmp_path),
            "--source",
            "synthetic",
            "--epochs",
            "1",
            "--version",
            "x1",
            "--no-default",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "ref: cnn_lstm x1 sha256=" in out
    assert "val_directional_accuracy" in out
    assert ModelRegistry(tmp_path).default_version("cnn_lstm") is None
