"""Train the reference CNN+LSTM on bundled market data and publish it to the registry.

Chronological split with a gap so no training window or target overlaps a held-out
one; normalisation and the return scale come from the training split only. The run
is deterministic for a seed (on one machine and thread count) and stops at
``max_seconds`` even mid-epoch, so ``cnnlstm train`` has a bounded cost.

    python -m model.train --registry ./.local/models --source eurusd
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.common.artifact import ArchitectureConfig, Normalization, TrainingMetrics
from model.common.features import WINDOW, compute_features, sliding_windows
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.data import DATA_SOURCES, DataSource, load_bars
from model.export import export_artifact, fit_normalization, make_random_artifact
from model.network import CNNLSTM, build_network

__all__ = ["export_artifact", "main_train", "make_random_artifact", "train"]

BATCH_SIZE = 128
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4
TRAIN_FRACTION = 0.8
GOLDEN_COUNT = 4


@dataclass(frozen=True)
class _Split:
    starts: np.ndarray  # [N] index of each window's first bar
    features: np.ndarray  # [N, WINDOW, F] raw
    returns: np.ndarray  # [N] log return over the horizon after each window
    up: np.ndarray  # [N] 1.0 where that return is > 0


def _make_splits(bars: np.ndarray, horizon: int) -> tuple[_Split, _Split]:
    """Window i covers bars i..i+W-1; its target is log(close[i+W-1+h] / close[i+W-1])."""
    log_close = np.log(bars[:, 3])
    n_windows = len(bars) - WINDOW - horizon + 1
    if n_windows < 10:
        raise ValueError(f"{len(bars)} bars are too few for window {WINDOW}, horizon {horizon}")
    last = np.arange(n_windows) + WINDOW - 1
    returns = log_close[last + horizon] - log_close[last]
    n_train = int(n_windows * TRAIN_FRACTION)
    # The first held-out window starts after the last training target's bar, so no bar
    # is seen by both sides (the window overlap alone would leak W-1 bars).
    val_start = n_train + WINDOW + horizon - 1
    if n_windows - val_start < GOLDEN_COUNT:
        raise ValueError(f"{len(bars)} bars leave too few held-out windows")
    features = compute_features(sliding_windows(bars)[:n_windows])

    def split(sl: slice) -> _Split:
        r = returns[sl]
        return _Split(np.arange(n_windows)[sl], features[sl], r, (r > 0).astype(np.float32))

    return split(slice(0, n_train)), split(slice(val_start, n_windows))


def _tensors(split: _Split, norm: Normalization) -> tuple[torch.Tensor, ...]:
    x = (split.features - np.asarray(norm.mean)) / np.asarray(norm.std)
    return (
        torch.from_numpy(x.astype(np.float32)),
        torch.from_numpy((split.returns / norm.return_std).astype(np.float32)),
        torch.from_numpy(split.up),
    )


def _loss(out: torch.Tensor, ret: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    # Return regression in units of its train std plus up/down classification.
    return nn.functional.mse_loss(out[:, 0], ret) + nn.functional.binary_cross_entropy_with_logits(
        out[:, 1], up
    )


def _evaluate(
    net: CNNLSTM, val: tuple[torch.Tensor, ...], train_up_rate: float
) -> dict[str, float]:
    x, ret, up = val
    net.eval()
    with torch.inference_mode():
        out = torch.cat([net(x[i : i + 512]) for i in range(0, len(x), 512)])
        loss = float(_loss(out, ret, up))
    pred_up = out[:, 1].numpy() > 0.0
    actual_up = up.numpy() > 0.5
    pred_ret, actual_ret = out[:, 0].numpy(), ret.numpy()
    both_vary = pred_ret.std() > 0 and actual_ret.std() > 0
    corr = float(np.corrcoef(pred_ret, actual_ret)[0, 1]) if both_vary else 0.0
    # Naive baseline: always answer the training split's majority class.
    majority_up = train_up_rate >= 0.5
    return {
        "val_loss": loss,
        "val_directional_accuracy": float(np.mean(pred_up == actual_up)),
        "naive_directional_accuracy": float(np.mean(actual_up == majority_up)),
        "val_return_corr": corr if np.isfinite(corr) else 0.0,
    }


def _default_version() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def train(
    registry_root: Path,
    name: str = "cnn_lstm",
    version: str | None = None,
    source: str = "eurusd",
    epochs: int = 8,
    seed: int = 0,
    max_seconds: float = 90.0,
    make_default: bool = True,
    horizon_bars: int = 1,
    progress: Callable[[str], None] | None = None,
) -> ModelRef:
    """Train, evaluate on the held-out tail, export and publish; return the new ref."""
    say = progress or (lambda _msg: None)
    if source not in DATA_SOURCES:
        raise ValueError(f"unknown data source {source!r}; use one of {DATA_SOURCES}")
    if horizon_bars < 1:
        raise ValueError("horizon_bars must be >= 1")
    version = version or _default_version()
    started = time.monotonic()
    deadline = started + max_seconds

    bars = load_bars(source, seed=seed)  # mypy narrows str to DataSource via the check above
    train_split, val_split = _make_splits(bars, horizon_bars)
    ret_std = float(train_split.returns.std()) or 1.0
    norm = fit_normalization(train_split.features, return_std=ret_std)
    x_train, r_train, up_train = _tensors(train_split, norm)
    val = _tensors(val_split, norm)
    say(f"{source}: {len(bars)} bars -> {len(x_train)} train / {len(val[0])} held-out windows")

    arch = ArchitectureConfig()
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):  # deterministic without touching the caller's RNG
        torch.manual_seed(seed)
        net = build_network(arch)
        optimiser = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        epochs_done = 0
        out_of_time = False
        for epoch in range(epochs):
            net.train()
            order = torch.from_numpy(rng.permutation(len(x_train)))
            total, seen = 0.0, 0
            for start in range(0, len(order), BATCH_SIZE):
                if time.monotonic() >= deadline:
                    out_of_time = True
                    break
                idx = order[start : start + BATCH_SIZE]
                if len(idx) < 2:  # BatchNorm cannot train on a single row
                    continue
                loss = _loss(net(x_train[idx]), r_train[idx], up_train[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                optimiser.step()
                total, seen = total + loss.item() * len(idx), seen + len(idx)
            if out_of_time:
                say(f"time budget of {max_seconds:.0f}s reached during epoch {epoch + 1}")
                break
            epochs_done += 1
            say(f"epoch {epoch + 1}/{epochs}: train loss {total / max(seen, 1):.4f}")
        net.eval()
    train_seconds = time.monotonic() - started
    scores = _evaluate(net, val, float(up_train.mean()))
    metrics = TrainingMetrics(
        data_source=source,
        train_rows=len(x_train),
        val_rows=len(val[0]),
        epochs=epochs_done,
        train_seconds=round(train_seconds, 3),
        seed=seed,
        horizon_bars=horizon_bars,
        **scores,
    )
    golden_idx = np.linspace(0, len(val_split.features) - 1, GOLDEN_COUNT).astype(int)
    description = (
        f"CNN+LSTM trained on {source} ({metrics.train_rows} windows, {epochs_done} full "
        f"epochs{', stopped by time budget' if out_of_time else ''}), horizon {horizon_bars}"
    )
    with tempfile.TemporaryDirectory(prefix="cnnlstm-train-") as tmp:
        export_artifact(
            net,
            arch,
            norm,
            metrics,
            val_split.features[golden_idx],
            Path(tmp),
            name=name,
            version=version,
            description=description,
            horizon_bars=horizon_bars,
        )
        ref = ModelRegistry(registry_root).publish(Path(tmp), name, version, make_default)
    say(
        f"published {ref.key}: val directional accuracy {metrics.val_directional_accuracy:.4f} "
        f"(naive {metrics.naive_directional_accuracy:.4f}), return corr "
        f"{metrics.val_return_corr:.4f}, {train_seconds:.1f}s"
    )
    return ref


def main_train(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cnnlstm train", description="Train the CNN+LSTM and publish it to the registry."
    )
    parser.add_argument(
        "--registry",
        default=os.environ.get("MODEL_REGISTRY_PATH", "./.local/models"),
        help="registry root (default: under cnnlstm, the config's model_registry.path, which "
        "$MODEL_REGISTRY_PATH overrides; under python -m model.train, $MODEL_REGISTRY_PATH "
        "or ./.local/models)",
    )
    parser.add_argument("--name", default="cnn_lstm")
    parser.add_argument("--version", default=None, help="default: UTC timestamp")
    parser.add_argument("--source", default="eurusd", choices=DATA_SOURCES)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=90.0)
    parser.add_argument("--horizon", type=int, default=1, help="bars ahead to predict")
    parser.add_argument("--no-default", action="store_true", help="do not move DEFAULT")
    args = parser.parse_args(argv)

    source: DataSource = args.source
    ref = train(
        Path(args.registry),
        name=args.name,
        version=args.version,
        source=source,
        epochs=args.epochs,
        seed=args.seed,
        max_seconds=args.max_seconds,
        make_default=not args.no_default,
        horizon_bars=args.horizon,
        progress=print,
    )
    manifest = ModelRegistry(args.registry).manifest(ref.name, ref.version)
    print(f"ref: {ref.name} {ref.version} sha256={ref.sha256}")
    print(manifest.training.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main_train())
