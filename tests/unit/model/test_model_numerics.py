"""Numerics choice at load time: bf16 autocast where the CPU has it and the golden agrees."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from app.config import ServiceConfig
from app.config.env import Settings
from app.serve.predictor_settings import predictor_settings
from model.common.artifact import read_manifest, write_manifest
from model.common.features import compute_features, sliding_windows
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.data import load_bars
from model.numerics import (
    BF16_GOLDEN_ATOL,
    NumericsChoice,
    autocast,
    choose_numerics,
    cpu_has_native_bf16,
    wanted_numerics,
)
from model.runtime import load_model
from model.service import PredictorService, PredictorSettings

CPU = torch.device("cpu")


def _has_bf16() -> bool:
    return True


def _no_bf16() -> bool:
    return False


def _perturb_golden(registry: ModelRegistry, ref: ModelRef, by: float) -> None:
    """Shift every golden prob_up by ``by``: fp32 and bf16 replays both miss it."""
    directory = registry.artifact_dir(ref.name, ref.version)
    manifest = read_manifest(directory)
    expected = [[ret, prob + by] for ret, prob in manifest.golden.expected]
    golden = manifest.golden.model_copy(update={"expected": expected})
    write_manifest(directory, manifest.model_copy(update={"golden": golden}))


def _real_features(n: int) -> np.ndarray:
    bars = load_bars("eurusd")[1000 : 1000 + n + 63]
    return compute_features(sliding_windows(bars))


def test_auto_chooses_bf16_when_the_cpu_has_it_and_the_golden_check_passes(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    model = load_model(registry, random_ref, numerics="auto", cpu_bf16=_has_bf16)
    assert model.numerics == NumericsChoice("bf16")
    assert model.numerics.autocast_dtype is torch.bfloat16
    features = _real_features(8)
    fp32 = load_model(registry, random_ref, numerics="fp32").predict(features)
    # The choice is in effect: the forward really runs autocast, so the answers differ.
    assert not np.array_equal(model.predict(features), fp32)


def test_auto_stays_fp32_when_the_cpu_has_no_native_bf16(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    model = load_model(registry, random_ref, numerics="auto", cpu_bf16=_no_bf16)
    assert model.numerics == NumericsChoice("fp32", fallback=None)


def test_fp32_setting_forces_fp32_on_a_cpu_with_bf16(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    model = load_model(registry, random_ref, numerics="fp32", cpu_bf16=_has_bf16)
    assert model.numerics == NumericsChoice("fp32")


def test_auto_keeps_fp32_on_cuda_even_where_the_cpu_has_bf16() -> None:
    assert wanted_numerics("auto", torch.device("cuda", 0), _has_bf16) == "fp32"
    assert wanted_numerics("auto", CPU, _has_bf16) == "bf16"
    assert wanted_numerics("bf16", CPU, _no_bf16) == "bf16"


def test_autocast_on_cuda_keeps_no_cache_of_cast_weights_for_graph_capture() -> None:
    # The CUDA forward is captured into graphs, which must not hold the cache's tensors;
    # on the CPU the cache stays. (A CPU-only torch warns that CUDA autocast is off.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on_cuda = autocast(torch.device("cuda", 0), torch.bfloat16)
    assert isinstance(on_cuda, torch.autocast)
    assert on_cuda._cache_enabled is False
    on_cpu = autocast(CPU, torch.bfloat16)
    assert isinstance(on_cpu, torch.autocast)
    assert on_cpu._cache_enabled is True


def test_unknown_numerics_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown numerics"):
        wanted_numerics("fp16", CPU, _has_bf16)


def test_bf16_falls_back_to_fp32_with_the_reason_when_its_golden_check_fails(
    registry: ModelRegistry, random_ref: ModelRef, caplog: pytest.LogCaptureFixture
) -> None:
    _perturb_golden(registry, random_ref, by=0.25)
    with caplog.at_level(logging.WARNING, logger="model.numerics"):
        model = load_model(
            registry, random_ref, validate=False, numerics="auto", cpu_bf16=_has_bf16
        )
    assert model.numerics.name == "fp32"
    assert model.numerics.autocast_dtype is None
    reason = model.numerics.fallback
    assert reason is not None
    assert "golden check under bf16 failed" in reason
    assert f"tolerance {BF16_GOLDEN_ATOL:g}" in reason
    assert any("serving fp32" in r.getMessage() for r in caplog.records)


def test_bf16_falls_back_to_fp32_when_the_tolerance_is_zero(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    model = load_model(registry, random_ref)
    choice = choose_numerics("bf16", CPU, model.golden_deviation, cpu_bf16=_has_bf16, atol=0.0)
    assert choice.name == "fp32"
    assert choice.fallback is not None
    assert "> tolerance 0" in choice.fallback


def test_fp32_golden_validation_is_unchanged_by_the_numerics_setting(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    model = load_model(registry, random_ref, numerics="auto", cpu_bf16=_has_bf16)
    assert model.golden_deviation() <= model.manifest.golden.atol  # fp32 replay
    assert model.golden_deviation("bf16") <= BF16_GOLDEN_ATOL


def test_bf16_predictions_stay_within_tolerance_of_fp32_on_real_features(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    features = _real_features(96)  # EURUSD hourly bars shipped with `backtesting`
    bf16 = load_model(registry, random_ref, numerics="bf16").predict(features)
    fp32 = load_model(registry, random_ref, numerics="fp32").predict(features)
    diff = np.abs(bf16 - fp32)
    diff[:, 0] /= registry.verify(random_ref.name, random_ref.version).normalization.return_std
    assert np.isfinite(bf16).all()
    assert diff.max() <= BF16_GOLDEN_ATOL


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse avx2 avx512f avx512_bf16 avx512_vnni", True),
        ("fpu avx2 avx512f amx_bf16 amx_tile amx_int8", True),
        ("fpu sse avx2 avx512f avx512bw", False),
    ],
)
def test_cpu_bf16_detection_reads_the_cpuinfo_flags(
    tmp_path: Path, flags: str, expected: bool
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16(cpuinfo) is expected


def test_service_status_reports_the_numerics_in_effect(
    registry_root: Path, registry: ModelRegistry, random_ref: ModelRef
) -> None:
    service = PredictorService(
        PredictorSettings(
            registry_path=str(registry_root), numerics="bf16", warmup_batch_sizes=(1,)
        )
    )
    service.load_default()
    status = service.status()
    assert (status.numerics, status.numerics_fallback) == ("bf16", None)


def test_service_status_reports_a_bf16_fallback_and_why(
    registry_root: Path, registry: ModelRegistry, random_ref: ModelRef
) -> None:
    _perturb_golden(registry, random_ref, by=0.25)
    settings = PredictorSettings(
        registry_path=str(registry_root),
        numerics="bf16",
        validation_enabled=False,
        warmup_batch_sizes=(1,),
    )
    service = PredictorService(settings)
    service.load_default()
    status = service.status()
    assert status.ready
    assert status.numerics == "fp32"
    assert status.numerics_fallback is not None
    assert "golden check under bf16 failed" in status.numerics_fallback


def test_config_numerics_setting_reaches_the_predictor_settings(tmp_path: Path) -> None:
    config = ServiceConfig.model_validate(
        {"model_registry": {"path": str(tmp_path)}, "serving": {"predictor_numerics": "fp32"}}
    )
    values = predictor_settings(config, Settings(DEVICE="cpu"))
    assert PredictorSettings.from_dict(values).numerics == "fp32"
    default = ServiceConfig.model_validate({"model_registry": {"path": str(tmp_path)}})
    assert predictor_settings(default, Settings(DEVICE="cpu"))["numerics"] == "auto"
