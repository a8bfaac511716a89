"""deploy/MODEL_CARD.md says what the code and the shipped data say.

The model's own accuracy varies with the training budget and the machine, so the card
quotes a run; everything else in it (architecture, features, horizon, split sizes and dates,
the naive baseline, the metric names) is checked here against the code and the EURUSD bars
that ship in ``backtesting``, without importing torch (``model/train.py`` is read, not run).
"""

from __future__ import annotations

import ast
import csv
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.common.artifact import ArchitectureConfig, TrainingMetrics
from model.common.features import FEATURE_NAMES, FEATURE_SPEC_VERSION, NUM_FEATURES, WINDOW
from model.data import _backtesting_data_dir

ROOT = Path(__file__).resolve().parents[2]
CARD = (ROOT / "deploy" / "MODEL_CARD.md").read_text(encoding="utf-8")
TRAIN_SRC = (ROOT / "model" / "train.py").read_text(encoding="utf-8")


def _module_constants(source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def _train_defaults() -> dict[str, Any]:
    tree = ast.parse(TRAIN_SRC)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    args = fn.args.args[-len(fn.args.defaults) :]
    return {
        a.arg: d.value
        for a, d in zip(args, fn.args.defaults, strict=True)
        if isinstance(d, ast.Constant)
    }


def test_the_card_states_the_window_features_and_horizon() -> None:
    assert f"**{WINDOW} bars**" in CARD
    assert f"**{NUM_FEATURES} scale-free features**" in CARD
    assert f"`{FEATURE_SPEC_VERSION}`" in CARD
    for name in FEATURE_NAMES:
        assert f"`{name}`" in CARD, name
    assert _train_defaults()["horizon_bars"] == 1
    assert "**1 bar**" in CARD


def test_the_card_states_the_architecture_and_training_setup() -> None:
    arch = ArchitectureConfig()
    assert (
        f"{arch.conv_layers} conv layers ({arch.conv_channels} channels, kernel "
        f"{arch.kernel_size}) → {arch.lstm_layers}-layer LSTM (hidden {arch.lstm_hidden}) → "
        f"head (hidden {arch.head_hidden}), dropout {arch.dropout}"
    ) in CARD
    consts = _module_constants(TRAIN_SRC)
    defaults = _train_defaults()
    assert (
        f"AdamW (lr {consts['LEARNING_RATE']:g}, weight decay {consts['WEIGHT_DECAY']:g})" in CARD
    )
    assert f"batches of {consts['BATCH_SIZE']}" in CARD
    assert f"{defaults['epochs']} epochs at most" in CARD
    assert f"seed {defaults['seed']}" in CARD
    assert f"first {round(consts['TRAIN_FRACTION'] * 100)}%" in CARD
    serve_cmd = (ROOT / "app" / "cli" / "serve_cmd.py").read_text(encoding="utf-8")
    budget = re.search(r'"--train-seconds", type=float, default=([0-9.]+)', serve_cmd)
    assert budget is not None
    assert f"({float(budget.group(1)):g} s in the demo)" in CARD


def test_the_metric_names_are_the_manifests() -> None:
    named = set(re.findall(r"`((?:val|naive)_[a-z_]+)`", CARD))
    assert named == {
        "val_directional_accuracy",
        "naive_directional_accuracy",
        "val_return_corr",
    }
    assert named <= set(TrainingMetrics.model_fields)


@pytest.fixture(scope="module")
def eurusd() -> tuple[list[str], np.ndarray]:
    with open(_backtesting_data_dir() / "EURUSD.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return [r[0] for r in rows], np.log(np.array([float(r[4]) for r in rows]))


def test_the_split_and_the_naive_baseline_match_the_shipped_bars(
    eurusd: tuple[list[str], np.ndarray],
) -> None:
    # model/train.py's _make_splits, restated: window i's target is the next bar's return.
    stamps, log_close = eurusd
    consts = _module_constants(TRAIN_SRC)
    horizon = 1
    n_windows = len(log_close) - WINDOW - horizon + 1
    n_train = int(n_windows * consts["TRAIN_FRACTION"])
    val_start = n_train + WINDOW + horizon - 1
    last = np.arange(n_windows) + WINDOW - 1
    returns = log_close[last + horizon] - log_close[last]
    train_up = float((returns[:n_train] > 0).mean())
    val_up = returns[val_start:] > 0
    naive = float(np.mean(val_up == (train_up >= 0.5)))

    assert f"{len(log_close)} bars, {stamps[0][:16]} to {stamps[-1][:16]}" in CARD
    assert f"the {n_windows} windows for training ({n_train} windows" in CARD
    assert f"targets up to {stamps[n_train - 1 + WINDOW - 1 + horizon][:16]}" in CARD
    assert f"**{n_windows - val_start} held-out windows**" in CARD
    assert f"bars from {stamps[val_start][:16]} to {stamps[-1][:16]}" in CARD
    assert f"on the {n_windows - val_start} held-out windows" in CARD
    assert f"| `naive_directional_accuracy` | **{naive:.3f}** |" in CARD
    assert f"(up: {train_up * 100:.1f}% of training targets)" in CARD


def test_the_card_says_there_is_no_edge() -> None:
    shown = re.search(r"\| `val_directional_accuracy` \| \*\*([0-9.]+)\*\*", CARD)
    naive = re.search(r"\| `naive_directional_accuracy` \| \*\*([0-9.]+)\*\*", CARD)
    assert shown is not None
    assert naive is not None
    # Within one standard error of the baseline on the held-out windows: no edge claimed.
    assert abs(float(shown.group(1)) - float(naive.group(1))) < (0.25 / 924) ** 0.5
    assert "no edge" in CARD.lower()
    assert "not a\ntrading signal" in CARD
