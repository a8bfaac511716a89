"""The CPU engine chosen at load: ONNX Runtime where it is right and faster, else torch."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from app.config import ServiceConfig
from app.config.env import Settings
from app.serve.predictor_settings import predictor_settings
from model.common.features import compute_features, sliding_windows
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.data import load_bars
from model.engine import (
    ALL_ROWS,
    TIMING_SIZES,
    EngineChoice,
    OnnxForward,
    choose_engine,
    compare_ms,
    onnx_split,
    pinned_split,
)
from model.runtime import load_model
from model.service import PredictorService, PredictorSettings

CPU = torch.device("cpu")


def _real_features(n: int) -> np.ndarray:
    bars = load_bars("eurusd")[2000 : 2000 + n + 63]
    return compute_features(sliding_windows(bars))


def _faster(session: OnnxForward, rows: int) -> tuple[float, float]:
    return 1.0 * rows, 2.0 * rows


def _slower(session: OnnxForward, rows: int) -> tuple[float, float]:
    return 3.0 * rows, 2.0 * rows


def _faster_up_to_4(session: OnnxForward, rows: int) -> tuple[float, float]:
    """ONNX Runtime 0.25 ms a row, torch 1 ms + 0.1 a row: about an AMX Xeon's bf16."""
    return 0.25 * rows, 1.0 + 0.1 * rows


def test_onnxruntime_serves_the_same_predictions_as_torch(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    onnx = load_model(registry, random_ref, engine="onnxruntime")
    plain = load_model(registry, random_ref, engine="torch")
    assert onnx.engine == EngineChoice(ALL_ROWS)
    assert (onnx.engine.name, plain.engine.name) == ("onnxruntime", "torch")
    assert plain.engine == EngineChoice()
    for n in (1, 7, 32):  # any batch size: the exported graph has a dynamic batch axis
        x = _real_features(n)
        got, want = onnx.predict(x), plain.predict(x)
        assert got.shape == want.shape == (n, 2)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert onnx.predict(np.zeros((0, 64, 16), dtype=np.float32)).shape == (0, 2)


def test_auto_takes_onnxruntime_for_the_sizes_where_it_measured_faster(
    registry: ModelRegistry, random_ref: ModelRef, caplog: pytest.LogCaptureFixture
) -> None:
    model = load_model(registry, random_ref, engine="torch")

    def choose(speeds: object) -> tuple[EngineChoice, OnnxForward | None]:
        return choose_engine(
            "auto",
            device=CPU,
            numerics="fp32",
            build=lambda: model.onnx_session(1),
            golden_deviation=model.onnx_golden_deviation,
            atol=model.manifest.golden.atol,
            speeds=speeds,  # type: ignore[arg-type]
        )

    choice, session = choose(_faster)
    assert choice == EngineChoice(ALL_ROWS)
    assert session is not None
    choice, session = choose(_faster_up_to_4)
    assert (choice.onnx_max_rows, choice.name, choice.fallback) == (4, "onnxruntime<=4+torch", None)
    assert session is not None
    assert [choice.onnx_serves(n) for n in (1, 4, 5, 32)] == [True, True, False, False]
    with caplog.at_level(logging.INFO, logger="model.engine"):
        choice, session = choose(_slower)
    assert choice == EngineChoice(0, choice.fallback)
    assert choice.name == "torch"
    assert session is None
    assert choice.fallback is not None
    assert "no faster" in choice.fallback
    assert "1: 3.00/2.00" in choice.fallback
    assert any("serving on torch" in r.getMessage() for r in caplog.records)


def test_the_split_is_where_onnxruntime_first_stops_being_faster() -> None:
    timed: list[int] = []

    def speeds(rows: int) -> tuple[float, float]:
        timed.append(rows)
        # Faster at 1, 2 and 16 rows, not at 4: the split stops at the first loss.
        return (1.0, 2.0) if rows in (1, 2, 16) else (2.0, 1.0)

    split, described = onnx_split(speeds)
    assert split == 2
    assert timed == [1, 2, 4], "sizes past the first loss are not timed"
    assert "4: 2.00/1.00" in described
    assert onnx_split(lambda rows: (1.0, 2.0))[0] == ALL_ROWS
    assert onnx_split(lambda rows: (2.0, 2.0))[0] == 0, "a tie is not faster"
    assert TIMING_SIZES[0] == 1
    assert list(TIMING_SIZES) == sorted(TIMING_SIZES)


def test_a_split_engine_runs_small_forwards_on_onnxruntime_and_large_on_torch(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    model = load_model(registry, random_ref, engine="torch")
    reference = load_model(registry, random_ref, engine="torch")
    session = model.onnx_session(1)
    rows_seen: list[int] = []

    class Counting(OnnxForward):
        def __init__(self) -> None:  # wraps the real session, no second export
            pass

        def __call__(self, features: np.ndarray) -> np.ndarray:
            rows_seen.append(len(features))
            return session(features)

    model.use_engine(EngineChoice(4), Counting())
    for n in (1, 4, 5, 32):
        x = _real_features(n)
        np.testing.assert_allclose(model.predict(x), reference.predict(x), rtol=0, atol=1e-6)
    assert rows_seen == [1, 4], "only the forwards of up to 4 rows ran on onnxruntime"
    with pytest.raises(ValueError, match="with session"):
        model.use_engine(EngineChoice(4), None)


def test_bf16_numerics_run_the_small_forwards_on_onnxruntime_in_fp32(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    fp32 = load_model(registry, random_ref, engine="torch")
    model = load_model(registry, random_ref, numerics="bf16", engine="auto", cpu_bf16=lambda: True)
    assert model.numerics.name == "bf16"
    # Whatever the split measured here, a forced one shows both paths: ONNX Runtime's is
    # fp32 (equal to torch fp32), torch's is bf16 (within the bf16 golden tolerance only).
    model.use_engine(EngineChoice(1), model.onnx_session(1))
    one, many = _real_features(1), _real_features(16)
    np.testing.assert_allclose(model.predict(one), fp32.predict(one), rtol=0, atol=1e-6)
    bf16_gap = np.abs(model.predict(many) - fp32.predict(many)).max()
    assert 0 < bf16_gap < 1e-1, "16 rows ran on torch in bf16"


def test_a_session_that_misses_the_golden_sample_is_not_served(
    registry: ModelRegistry, random_ref: ModelRef, caplog: pytest.LogCaptureFixture
) -> None:
    model = load_model(registry, random_ref, engine="torch")
    other = load_model(registry, random_ref, engine="torch")
    with torch.no_grad():  # another network's weights: its outputs miss this golden sample
        for p in other.network.parameters():
            p.add_(0.5)
    with caplog.at_level(logging.WARNING, logger="model.engine"):
        choice, session = choose_engine(
            "onnxruntime",
            device=CPU,
            numerics="fp32",
            build=lambda: other.onnx_session(1),
            golden_deviation=model.onnx_golden_deviation,
            atol=model.manifest.golden.atol,
            speeds=_faster,
        )
    assert session is None
    assert choice.name == "torch"
    assert choice.fallback is not None
    assert "golden check under onnxruntime failed" in choice.fallback
    assert any(r.levelno == logging.WARNING for r in caplog.records), "asked by name: a warning"


def _without_a_model(
    setting: str,
    build: Callable[[], OnnxForward],
    *,
    device: torch.device = CPU,
    numerics: str = "fp32",
    available: bool = True,
) -> tuple[EngineChoice, OnnxForward | None]:
    """The choice for ``build`` where no real session is needed (it is refused first)."""
    return choose_engine(
        setting,
        device=device,
        numerics=numerics,
        build=build,
        golden_deviation=lambda s: 0.0,
        atol=1e-4,
        speeds=_faster,
        available=lambda: available,
    )


def _no_export() -> OnnxForward:
    raise AssertionError("nothing is exported when it cannot or must not be served")


@pytest.mark.parametrize(
    ("device", "numerics", "available", "reason"),
    [
        (torch.device("cuda"), "fp32", True, "CPU only"),
        (CPU, "fp32", False, "not installed"),
    ],
)
def test_torch_stays_where_onnxruntime_cannot_serve(
    device: torch.device, numerics: str, available: bool, reason: str
) -> None:
    choice, session = _without_a_model(
        "auto", _no_export, device=device, numerics=numerics, available=available
    )
    assert session is None
    assert choice.name == "torch"
    assert choice.fallback is not None
    assert reason in choice.fallback


def test_onnxruntime_by_name_serves_fp32_numerics_only() -> None:
    choice, session = _without_a_model("onnxruntime", _no_export, numerics="bf16")
    assert session is None
    assert choice.fallback is not None
    assert "fp32 only" in choice.fallback


def test_a_failed_export_keeps_torch_with_the_reason() -> None:
    def build() -> OnnxForward:
        raise RuntimeError("exporter removed")

    choice, session = _without_a_model("auto", build)
    assert session is None
    assert choice.fallback is not None
    assert "RuntimeError: exporter removed" in choice.fallback


def test_the_torch_setting_neither_exports_nor_reports_a_fallback() -> None:
    assert _without_a_model("torch", _no_export) == (EngineChoice(), None)
    with pytest.raises(ValueError, match="unknown engine"):
        _without_a_model("tensorrt", _no_export)


def test_compare_ms_times_both_calls_alike() -> None:
    calls = {"onnx": 0, "torch": 0}

    def onnx() -> None:
        calls["onnx"] += 1

    def slow_torch() -> None:
        calls["torch"] += 1
        sum(range(20_000))

    onnx_ms, torch_ms = compare_ms(onnx, slow_torch, calls=2)
    assert calls["onnx"] == calls["torch"] == 1 + 3 * 2, "one warm-up, then 3 rounds of 2"
    assert 0 <= onnx_ms < torch_ms


def test_service_status_reports_the_engine_in_effect(
    registry_root: Path, registry: ModelRegistry, random_ref: ModelRef
) -> None:
    service = PredictorService(
        PredictorSettings(
            registry_path=str(registry_root), engine="onnxruntime", warmup_batch_sizes=(1, 8)
        )
    )
    service.load_default()
    status = service.status()
    assert (status.engine, status.engine_fallback) == ("onnxruntime", None)
    forced = PredictorService(
        PredictorSettings(registry_path=str(registry_root), engine="torch", warmup_batch_sizes=(1,))
    )
    forced.load_default()
    assert (forced.status().engine, forced.status().engine_fallback) == ("torch", None)


def test_config_engine_setting_reaches_the_predictor_settings(tmp_path: Path) -> None:
    config = ServiceConfig.model_validate(
        {"model_registry": {"path": str(tmp_path)}, "serving": {"predictor_engine": "torch"}}
    )
    assert PredictorSettings.from_dict(predictor_settings(config, Settings())).engine == "torch"
    default = ServiceConfig.model_validate({"model_registry": {"path": str(tmp_path)}})
    assert PredictorSettings.from_dict(predictor_settings(default, Settings())).engine == "auto"


def test_onnxruntime_by_name_makes_auto_numerics_fp32(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    model = load_model(
        registry, random_ref, numerics="auto", engine="onnxruntime", cpu_bf16=lambda: True
    )
    assert (model.numerics.name, model.engine.name) == ("fp32", "onnxruntime")
    forced = load_model(
        registry, random_ref, numerics="bf16", engine="onnxruntime", cpu_bf16=lambda: True
    )
    assert (forced.numerics.name, forced.engine.name) == ("bf16", "torch")


def test_an_engine_name_reads_back_into_the_same_choice() -> None:
    for choice in (EngineChoice(), EngineChoice(ALL_ROWS), EngineChoice(4)):
        assert EngineChoice.named(choice.name) == choice
    for bad in ("onnxruntime<=0+torch", "onnxruntime<=x+torch", "tensorrt", "onnxruntime<=4"):
        with pytest.raises(ValueError, match="not an engine name"):
            EngineChoice.named(bad)


def _never_timed(session: OnnxForward, rows: int) -> tuple[float, float]:
    raise AssertionError("a split pinned by name is not timed")


def test_a_split_pinned_by_name_is_served_without_timing(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    model = load_model(registry, random_ref, engine="torch")
    for numerics in ("fp32", "bf16"):  # torch runs the larger forwards in the numerics
        choice, session = choose_engine(
            "onnxruntime<=4+torch",
            device=CPU,
            numerics=numerics,
            build=lambda: model.onnx_session(1),
            golden_deviation=model.onnx_golden_deviation,
            atol=model.manifest.golden.atol,
            speeds=_never_timed,
        )
        assert (choice, choice.name) == (EngineChoice(4), "onnxruntime<=4+torch")
        assert session is not None
    pinned = load_model(registry, random_ref, engine="onnxruntime<=2+torch")
    assert (pinned.numerics.name, pinned.engine.name) == ("fp32", "onnxruntime<=2+torch")
    plain = load_model(registry, random_ref, engine="torch")
    for n in (1, 2, 3, 32):  # ONNX Runtime up to 2 rows, torch above: the same answers
        np.testing.assert_allclose(
            pinned.predict(_real_features(n)), plain.predict(_real_features(n)), atol=1e-6
        )


def test_a_pinned_split_that_cannot_be_served_keeps_torch_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="model.engine"):
        choice, session = _without_a_model("onnxruntime<=8+torch", _no_export, available=False)
    assert (choice.name, session) == ("torch", None)
    assert choice.fallback is not None
    assert "not installed" in choice.fallback
    assert [r.levelno for r in caplog.records] == [logging.WARNING], "asked by name: a warning"


def test_a_pinned_split_must_be_a_split_name() -> None:
    assert [pinned_split(s) for s in ("onnxruntime<=4+torch", "onnxruntime<=32+torch")] == [4, 32]
    for bad in ("auto", "torch", "onnxruntime", "onnxruntime<=0+torch", "onnxruntime<=4"):
        assert pinned_split(bad) is None
    for bad in ("onnxruntime<=0+torch", "onnxruntime<=x+torch", "onnxruntime<=4"):
        with pytest.raises(ValueError, match="unknown engine"):
            _without_a_model(bad, _no_export)


def test_the_config_takes_the_engine_names_the_predictor_takes(tmp_path: Path) -> None:
    def engine(setting: str) -> str:
        config = ServiceConfig.model_validate(
            {"model_registry": {"path": str(tmp_path)}, "serving": {"predictor_engine": setting}}
        )
        return PredictorSettings.from_dict(predictor_settings(config, Settings())).engine

    for good in ("auto", "torch", "onnxruntime", "onnxruntime<=4+torch", "onnxruntime<=16+torch"):
        assert engine(good) == good
    for bad in ("tensorrt", "onnxruntime<=0+torch", "onnxruntime<=4", "onnxruntime<=x+torch"):
        with pytest.raises(ValidationError, match="predictor_engine"):
            engine(bad)
