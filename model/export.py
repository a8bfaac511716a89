"""Write artifacts: weights as safetensors plus a manifest with a golden sample.

``make_random_artifact`` builds a valid, seeded, untrained artifact in about a second
for tests, fakes and demos; ``model.train`` exports trained ones the same way.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from model.common.artifact import (
    WEIGHTS_FILE,
    ArchitectureConfig,
    FeatureSpecInfo,
    GoldenSample,
    Manifest,
    Normalization,
    TrainingMetrics,
    sha256_file,
    write_manifest,
)
from model.common.features import NUM_FEATURES, WINDOW, compute_features, sliding_windows
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.data import synthetic_bars
from model.network import CNNLSTM, build_network
from model.runtime import normalisation_tensors, run_network

GOLDEN_ATOL = 1e-4
_STD_FLOOR = 1e-8


def fit_normalization(features: np.ndarray, return_std: float = 1.0) -> Normalization:
    """Per-feature mean/std over every row of ``[N, WINDOW, NUM_FEATURES]`` features."""
    flat = features.reshape(-1, NUM_FEATURES).astype(np.float64)
    std = flat.std(axis=0)
    # A feature that never varies in training carries no information; std 1 leaves it
    # centred instead of blowing it up.
    std = np.where(std < _STD_FLOOR, 1.0, std)
    return Normalization(
        mean=flat.mean(axis=0).tolist(), std=std.tolist(), return_std=float(return_std)
    )


def export_artifact(
    model: CNNLSTM,
    arch: ArchitectureConfig,
    normalization: Normalization,
    training: TrainingMetrics,
    golden_inputs: np.ndarray,
    out_dir: Path,
    name: str,
    version: str,
    description: str,
    horizon_bars: int,
) -> Path:
    """Write ``model.safetensors`` and ``manifest.json`` into ``out_dir``; return it.

    The golden outputs are computed here, on CPU in eval mode, through the same
    ``run_network`` the runtime serves with.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net = model.to("cpu").eval()
    golden_inputs = np.asarray(golden_inputs, dtype=np.float32)
    mean, inv_std = normalisation_tensors(normalization, torch.device("cpu"))
    expected = run_network(net, golden_inputs, mean, inv_std, normalization.return_std)

    weights = out_dir / WEIGHTS_FILE
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    safetensors.torch.save_file(state, str(weights), metadata={"format": "pt"})

    manifest = Manifest(
        name=name,
        version=version,
        created_at=datetime.now(UTC),
        description=description,
        architecture=arch,
        feature_spec=FeatureSpecInfo(window=arch.window),
        normalization=normalization,
        weights_file=WEIGHTS_FILE,
        weights_sha256=sha256_file(weights),
        training=training,
        golden=GoldenSample(
            inputs=golden_inputs.astype(np.float64).tolist(),
            expected=expected.tolist(),
            atol=GOLDEN_ATOL,
        ),
        horizon_bars=horizon_bars,
    )
    write_manifest(out_dir, manifest)
    return out_dir


def make_random_artifact(
    registry_root: Path,
    name: str = "cnn_lstm",
    version: str = "0.0.1",
    seed: int = 0,
    make_default: bool = True,
    flip_direction: bool = False,
) -> ModelRef:
    """Publish an untrained (seeded) but fully valid artifact. Same seed, same weights.

    ``flip_direction``: negate the head's outputs, so every answer has the other sign of
    ``expected_return`` and ``1 - prob_up`` of the same seed's model. It is still a valid
    artifact (its golden outputs are its own): a green that never fails yet always
    disagrees, for rollout tests.
    """
    arch = ArchitectureConfig()
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream alone
        torch.manual_seed(seed)
        net = build_network(arch)
    if flip_direction:
        last = net.head[-1]
        assert isinstance(last, torch.nn.Linear)
        with torch.no_grad():
            last.weight.neg_()
            last.bias.neg_()
    bars = synthetic_bars(WINDOW + 255, seed=seed)
    features = compute_features(sliding_windows(bars))
    normalization = fit_normalization(features, return_std=float(np.diff(np.log(bars[:, 3])).std()))
    metrics = TrainingMetrics(
        data_source="synthetic (random init, untrained)",
        train_rows=0,
        val_rows=0,
        epochs=0,
        train_seconds=0.0,
        val_loss=0.0,
        val_directional_accuracy=0.5,
        naive_directional_accuracy=0.5,
        val_return_corr=0.0,
        seed=seed,
        horizon_bars=1,
    )
    golden = features[np.linspace(0, len(features) - 1, 4).astype(int)]
    with tempfile.TemporaryDirectory(prefix="cnnlstm-export-") as tmp:
        export_artifact(
            net,
            arch,
            normalization,
            metrics,
            golden,
            Path(tmp),
            name=name,
            version=version,
            description=f"random-init CNN+LSTM (seed {seed}) for tests and demos; not trained",
            horizon_bars=1,
        )
        return ModelRegistry(registry_root).publish(Path(tmp), name, version, make_default)
