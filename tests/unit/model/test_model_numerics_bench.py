"""``python -m model.numerics_bench``: every CPU numerics timed beside the fp32 baseline."""

from __future__ import annotations

import pytest

from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.int8 import INT8_GOLDEN_ATOL
from model.numerics_bench import CANDIDATES, main, run


def test_each_numerics_is_timed_or_says_why_not_and_deviates_as_expected(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    results = run(registry, random_ref.name, None, rows=[1, 3], rounds=2, check_rows=16)
    labels = {r["numerics"] for r in results}
    assert labels == {label for label, _, _ in CANDIDATES}
    timed = {(r["numerics"], r["rows"]): r for r in results if "skipped" not in r}
    for label in ("fp32 torch", "fp32 onnxruntime", "int8 onnxruntime"):
        for rows in (1, 3):
            r = timed[(label, rows)]
            assert 0 < r["best_ms"] <= r["median_ms"]
    assert timed[("fp32 torch", 1)]["max_dev_vs_fp32"] == 0.0
    assert timed[("fp32 onnxruntime", 1)]["max_dev_vs_fp32"] < 1e-4
    assert 0 < timed[("int8 onnxruntime", 1)]["max_dev_vs_fp32"] <= INT8_GOLDEN_ATOL
    assert timed[("int8 onnxruntime", 3)]["engine"] == "onnxruntime"
    skipped = [r for r in results if "skipped" in r]
    assert all(r["numerics"] == "bf16 torch" and r["skipped"] for r in skipped)


def test_the_command_prints_one_line_per_numerics_and_size(
    registry: ModelRegistry, random_ref: ModelRef, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--registry", str(registry.root), "--rows", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for label in ("fp32 torch", "fp32 onnxruntime", "int8 onnxruntime"):
        assert any(line.startswith(label) and " 2 " in line for line in out.splitlines())
