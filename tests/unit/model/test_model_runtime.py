"""Runtime: load-time integrity and golden checks, predict contract, device handling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from model import runtime
from model.common.artifact import read_manifest, write_manifest
from model.common.errors import ArtifactValidationError
from model.common.features import NUM_FEATURES, WINDOW, compute_features, sliding_windows
from model.common.gpu import GpuOptions
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.data import synthetic_bars
from model.runtime import LoadedModel, load_model, resolve_device


@pytest.fixture
def loaded(registry: ModelRegistry, random_ref: ModelRef) -> LoadedModel:
    return load_model(registry, random_ref)


def _features(n: int, seed: int = 0) -> np.ndarray:
    return compute_features(sliding_windows(synthetic_bars(WINDOW + n - 1, seed=seed)))


def _tamper(registry: ModelRegistry, ref: ModelRef, **changes: object) -> None:
    directory = registry.artifact_dir(ref.name, ref.version)
    manifest = read_manifest(directory)
    write_manifest(directory, manifest.model_copy(update=changes))


def test_predict_equals_a_direct_forward_on_normalised_inputs(loaded: LoadedModel) -> None:
    features = _features(10, seed=3)
    norm = loaded.manifest.normalization
    x = (features - np.asarray(norm.mean, dtype=np.float32)) / np.asarray(norm.std, np.float32)
    with torch.no_grad():
        raw = loaded.network(torch.from_numpy(x.astype(np.float32))).double().numpy()
    out = loaded.predict(features)
    assert out.dtype == np.float64
    assert out.shape == (10, 2)
    np.testing.assert_allclose(out[:, 0], raw[:, 0] * norm.return_std, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(out[:, 1], 1.0 / (1.0 + np.exp(-raw[:, 1])), rtol=1e-5)


def test_prob_up_stays_within_zero_and_one_for_extreme_inputs(loaded: LoadedModel) -> None:
    extreme = np.concatenate(
        [_features(4), np.full((2, WINDOW, NUM_FEATURES), 1e4, np.float32) * [[[1]], [[-1]]]]
    )
    prob = loaded.predict(extreme.astype(np.float32))[:, 1]
    assert np.isfinite(prob).all()
    assert ((prob >= 0.0) & (prob <= 1.0)).all()


def test_network_outputs_maps_every_engine_alike_without_overflow_warnings() -> None:
    logits = np.concatenate([np.linspace(-800, 800, 4001), [-30.0, 0.0, 30.0]])
    raw = np.stack([logits / 100, logits], axis=1).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exp(800) must not overflow into a warning
        from_array = runtime.network_outputs(raw, 0.02)  # ONNX Runtime's answer
        from_tensor = runtime.network_outputs(torch.from_numpy(raw), 0.02)  # torch's
        from_bf16 = runtime.network_outputs(torch.from_numpy(raw).to(torch.bfloat16), 0.02)
    assert from_array.dtype == np.float64
    assert np.array_equal(from_array, from_tensor)
    np.testing.assert_array_equal(from_array[:, 0], raw[:, 0].astype(np.float64) * 0.02)
    expected = torch.sigmoid(torch.from_numpy(raw[:, 1]).double()).numpy()
    np.testing.assert_allclose(from_array[:, 1], expected, rtol=1e-14, atol=1e-300)
    assert from_array[0, 1] >= 0.0
    assert from_array[-4, 1] == 1.0
    assert from_array[-2, 1] == 0.5
    # bf16 answers (torch autocast) are mapped from their exact float32 values.
    as_float32 = torch.from_numpy(raw).to(torch.bfloat16).float().numpy()
    assert np.array_equal(from_bf16, runtime.network_outputs(as_float32, 0.02))


def test_predict_rows_do_not_depend_on_batch_companions(loaded: LoadedModel) -> None:
    features = _features(9, seed=4)
    together = loaded.predict(features)
    alone = np.concatenate([loaded.predict(features[i : i + 1]) for i in range(9)])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, WINDOW, NUM_FEATURES - 1), (WINDOW, NUM_FEATURES)])
def test_predict_raises_when_feature_shape_is_wrong(
    loaded: LoadedModel, shape: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match="features must be"):
        loaded.predict(np.zeros(shape, np.float32))


def test_predict_returns_empty_output_for_zero_rows(loaded: LoadedModel) -> None:
    assert loaded.predict(np.zeros((0, WINDOW, NUM_FEATURES), np.float32)).shape == (0, 2)


def test_load_reproduces_the_golden_sample(loaded: LoadedModel) -> None:
    assert loaded.golden_deviation() <= loaded.manifest.golden.atol
    assert loaded.device == torch.device("cpu")
    assert not loaded.warmed
    params = sum(p.numel() for p in loaded.network.parameters())
    assert params * 4 <= loaded.nbytes <= params * 4 + 4096  # fp32 weights + BatchNorm stats


def test_load_fails_golden_check_when_normalisation_is_tampered(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    manifest = registry.manifest(random_ref.name, random_ref.version)
    mean = list(manifest.normalization.mean)
    mean[0] += 5 * manifest.normalization.std[0]
    _tamper(
        registry, random_ref, normalization=manifest.normalization.model_copy(update={"mean": mean})
    )
    registry.verify(random_ref.name, random_ref.version)  # checksum alone cannot see it
    with pytest.raises(ArtifactValidationError, match="golden check"):
        load_model(registry, random_ref)
    load_model(registry, random_ref, validate=False)  # the check is what refuses it


def test_load_fails_when_manifest_checksum_is_edited(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    _tamper(registry, random_ref, weights_sha256="f" * 64)
    with pytest.raises(ArtifactValidationError, match="checksum mismatch"):
        load_model(registry, random_ref)


def test_load_refuses_a_ref_pinned_to_other_weights(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    stale = ModelRef(random_ref.name, random_ref.version, "e" * 64)
    with pytest.raises(ArtifactValidationError, match="pinned"):
        load_model(registry, stale)


def test_load_refuses_another_feature_spec_version(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    manifest = registry.manifest(random_ref.name, random_ref.version)
    spec = manifest.feature_spec.model_copy(update={"version": "ohlcv32-v9"})
    _tamper(registry, random_ref, feature_spec=spec)
    with pytest.raises(ArtifactValidationError, match="ohlcv32-v9"):
        load_model(registry, random_ref)


def test_warmup_marks_the_model_warmed(loaded: LoadedModel) -> None:
    loaded.warmup((1, 5))
    assert loaded.warmed


def test_gpu_request_without_cuda_falls_back_to_cpu_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_FALLBACK_WARNED", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        devices = [resolve_device(name) for name in ("gpu", "GPU", "cuda", "cuda:0")]
    assert devices == [torch.device("cpu")] * 4
    assert len(caught) == 1
    assert "CUDA is not available" in str(caught[0].message)


@pytest.mark.parametrize("name", ["tpu", "", "cpu0", "cuda:x"])
def test_resolve_device_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device(name)


def test_apply_gpu_options_leaves_flags_alone_on_cpu() -> None:
    before = torch.backends.cudnn.benchmark
    runtime.apply_gpu_options(torch.device("cpu"), GpuOptions(enable_cudnn_benchmark=not before))
    assert torch.backends.cudnn.benchmark == before


def test_maybe_cleanup_is_a_noop_on_cpu(loaded: LoadedModel) -> None:
    assert loaded.maybe_cleanup(now=1e12) is False


def test_maybe_cleanup_runs_at_most_once_per_interval_on_cuda(
    loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    loaded.device = torch.device("cuda")  # only the bookkeeping is exercised
    # A round clock: (t + 2i) - (t + i) < i in floating point for some monotonic t.
    loaded._last_cleanup = start = 1000.0
    interval = GpuOptions().cleanup_interval_s
    ran = [loaded.maybe_cleanup(now=start + dt) for dt in (1, interval, interval + 1, 2 * interval)]
    assert ran == [False, True, False, True]
    assert len(calls) == 2


def test_configure_threads_sets_torch_threads() -> None:
    before = torch.get_num_threads()
    try:
        runtime.configure_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match=">= 1"):
        runtime.configure_threads(0)
