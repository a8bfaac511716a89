"""Int8 numerics, by name only: ONNX Runtime with int8 weights, within the reduced-precision
golden tolerance, else fp32 with the reason."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from app.config import ServiceConfig
from app.config.env import Settings
from app.serve.predictor_settings import predictor_settings
from model import int8 as int8_module
from model.common.artifact import read_manifest, write_manifest
from model.common.features import compute_features, sliding_windows
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.data import load_bars
from model.engine import ALL_ROWS, EngineChoice, OnnxForward
from model.int8 import INT8_GOLDEN_ATOL, choose_int8, cpu_has_vnni
from model.runtime import load_model
from model.service import PredictorService, PredictorSettings

CPU = torch.device("cpu")


def _real_features(n: int) -> np.ndarray:
    bars = load_bars("eurusd")[3000 : 3000 + n + 63]
    return compute_features(sliding_windows(bars))


def _no_export() -> OnnxForward:
    raise AssertionError("nothing is exported when int8 cannot be served")


def test_int8_runs_every_forward_on_onnxruntime_within_its_tolerance_of_fp32(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    int8 = load_model(registry, random_ref, numerics="int8", engine="auto")
    fp32 = load_model(registry, random_ref, numerics="fp32", engine="onnxruntime")
    assert (int8.numerics.name, int8.numerics.fallback) == ("int8", None)
    assert int8.engine == EngineChoice(ALL_ROWS)
    assert int8.engine.name == "onnxruntime"
    for rows in (1, 5, 32):
        x = _real_features(rows)
        got, exact = int8.predict(x), fp32.predict(x)
        assert got.shape == (rows, 2)
        gap = np.abs(got - exact)
        gap[:, 0] /= int8.manifest.normalization.return_std
        # Quantised for real (not fp32 under another name), yet within the bound.
        assert 0 < gap.max() <= INT8_GOLDEN_ATOL, (rows, gap.max())


def test_an_int8_row_depends_on_its_batch_mates_within_the_tolerance(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    """The documented cost of int8 (model/int8.py): one scale per forward."""
    int8 = load_model(registry, random_ref, numerics="int8", engine="auto")
    fp32 = load_model(registry, random_ref, numerics="fp32", engine="onnxruntime")
    x = _real_features(32)
    x[1:] *= 3.0  # batch-mates with larger inputs widen the forward's int8 scale
    gaps = []
    for model in (int8, fp32):
        alone, together = model.predict(x[:1])[0], model.predict(x)[0]
        gap = np.abs(alone - together)
        gap[0] /= model.manifest.normalization.return_std
        gaps.append(float(gap.max()))
    int8_gap, fp32_gap = gaps
    assert fp32_gap < 1e-6, "fp32: the same answer up to summation order"
    assert 100 * fp32_gap < int8_gap <= INT8_GOLDEN_ATOL


def test_auto_never_takes_int8(registry: ModelRegistry, random_ref: ModelRef) -> None:
    for cpu_bf16 in (True, False):
        model = load_model(
            registry, random_ref, numerics="auto", engine="auto", cpu_bf16=lambda b=cpu_bf16: b
        )
        assert model.numerics.name == ("bf16" if cpu_bf16 else "fp32")


def test_int8_that_misses_the_golden_sample_is_served_in_fp32_with_the_reason(
    registry: ModelRegistry, random_ref: ModelRef, caplog: pytest.LogCaptureFixture
) -> None:
    # Every golden prob_up moved by 0.05: past int8's tolerance (validation off, so the fp32
    # check does not refuse the artifact first).
    directory = registry.artifact_dir(random_ref.name, random_ref.version)
    manifest = read_manifest(directory)
    expected = [[ret, prob + 0.05] for ret, prob in manifest.golden.expected]
    golden = manifest.golden.model_copy(update={"expected": expected})
    write_manifest(directory, manifest.model_copy(update={"golden": golden}))
    with caplog.at_level(logging.WARNING, logger="model.int8"):
        model = load_model(registry, random_ref, numerics="int8", engine="auto", validate=False)
    assert model.numerics.name == "fp32"
    assert model.numerics.fallback is not None
    assert "golden check under int8 failed" in model.numerics.fallback
    assert any("serving fp32" in r.getMessage() for r in caplog.records)
    plain = load_model(registry, random_ref, numerics="fp32", engine="auto", validate=False)
    x = _real_features(3)
    np.testing.assert_allclose(model.predict(x), plain.predict(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("device", "engine", "available", "reason"),
    [
        (torch.device("cuda"), "auto", True, "CPU only"),
        (CPU, "torch", True, "engine setting is torch"),
        (CPU, "auto", False, "not installed"),
    ],
)
def test_int8_is_refused_where_onnxruntime_cannot_run_it(
    device: torch.device, engine: str, available: bool, reason: str
) -> None:
    session, refused = choose_int8(
        device=device,
        engine=engine,
        build=_no_export,
        golden_deviation=lambda s: 0.0,
        available=lambda: available,
    )
    assert session is None
    assert refused is not None
    assert reason in refused


def test_a_failed_int8_export_is_refused_with_the_reason() -> None:
    def build() -> OnnxForward:
        raise RuntimeError("quantiser removed")

    session, refused = choose_int8(
        device=CPU, engine="auto", build=build, golden_deviation=lambda s: 0.0
    )
    assert session is None
    assert refused == "export to int8 failed: RuntimeError: quantiser removed"


def test_int8_with_the_torch_engine_loads_fp32_on_torch_and_says_why(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    model = load_model(registry, random_ref, numerics="int8", engine="torch")
    assert (model.numerics.name, model.engine.name) == ("fp32", "torch")
    assert model.numerics.fallback == "int8 runs on ONNX Runtime, and the engine setting is torch"


def test_service_status_and_config_carry_int8(
    tmp_path: Path, registry_root: Path, registry: ModelRegistry, random_ref: ModelRef
) -> None:
    config = ServiceConfig.model_validate(
        {"model_registry": {"path": str(registry_root)}, "serving": {"predictor_numerics": "int8"}}
    )
    settings = PredictorSettings.from_dict(predictor_settings(config, Settings(DEVICE="cpu")))
    assert settings.numerics == "int8"
    service = PredictorService(settings)
    service.load_default()
    status = service.status()
    assert (status.numerics, status.numerics_fallback) == ("int8", None)
    assert (status.engine, status.engine_fallback) == ("onnxruntime", None)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse2 avx2 fma", False),
        ("avx2 avx512f avx512_vnni", True),
        ("avx2 avx_vnni", True),
        ("avx512f amx_tile amx_int8", True),
    ],
)
def test_vnni_detection_reads_the_cpuinfo_flags(tmp_path: Path, flags: str, expected: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_has_vnni(cpuinfo) is expected
    assert cpu_has_vnni(tmp_path / "missing") is False


def test_a_cpu_without_vnni_gets_seven_bit_weights_within_the_tolerance(
    registry: ModelRegistry, random_ref: ModelRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = _real_features(16)
    fp32 = load_model(registry, random_ref, numerics="fp32", engine="onnxruntime").predict(x)
    outputs = {}
    for vnni in (True, False):
        monkeypatch.setattr(int8_module, "cpu_has_vnni", lambda v=vnni: v)
        model = load_model(registry, random_ref, numerics="int8", engine="auto")
        assert model.numerics.name == "int8"
        outputs[vnni] = model.predict(x)
        gap = np.abs(outputs[vnni] - fp32)
        gap[:, 0] /= model.manifest.normalization.return_std
        assert gap.max() <= INT8_GOLDEN_ATOL
    assert not np.array_equal(outputs[True], outputs[False]), "7-bit weights are other weights"
