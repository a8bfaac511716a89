"""Import rules: the gateway-side modules stay torch-free, nothing pulls in
web frameworks or Ray, and the GPU check runs (CPU path) without either."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from model import gpu_check

ROOT = Path(__file__).resolve().parents[3]
TORCH_FREE = [
    "model.common.refs",
    "model.common.errors",
    "model.common.features",
    "model.common.artifact",
    "model.common.registry",
    "model.data",
]
TORCH_SIDE = ["model.network", "model.runtime", "model.export", "model.train", "model.gpu_check"]


def _modules_after_import(modules: list[str]) -> set[str]:
    code = (
        "import json, sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def test_gateway_side_modules_import_without_torch() -> None:
    loaded = _modules_after_import(TORCH_FREE)
    assert "torch" not in loaded
    assert not loaded & {"fastapi", "starlette", "ray"}


def test_torch_side_modules_import_without_web_frameworks_or_ray() -> None:
    loaded = _modules_after_import(TORCH_SIDE)
    assert "torch" in loaded
    assert not loaded & {"fastapi", "starlette", "ray", "app"}


def test_model_package_init_stays_empty() -> None:
    assert (ROOT / "model" / "__init__.py").read_text().strip() == ""


def test_gpu_check_reports_the_cpu_path_without_cuda(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    code = gpu_check.main(
        [
            "--json",
            str(out),
            "--device",
            "cpu",
            "--batch-sizes",
            "1,4",
            "--iters",
            "3",
            "--warmup",
            "1",
        ]
    )
    report = json.loads(out.read_text())
    assert code == 0
    assert report["golden_max_deviation_fp32"] <= 1e-4
    assert {(r["mode"], r["batch"]) for r in report["results"]} == {
        ("eager", 1),
        ("predict", 1),
        ("eager", 4),
        ("predict", 4),
    }
    assert all(r["p99_ms"] >= r["p50_ms"] > 0 for r in report["results"])
    assert report["target"] is None  # a CPU's figure is no verdict on the GPU target


def test_gpu_target_verdict_reads_the_32_row_predict_row() -> None:
    rows = [
        {"mode": "graph", "batch": 32, "p50_ms": 0.2},
        {"mode": "predict", "batch": 8, "p50_ms": 0.3},
        {"mode": "predict", "batch": 32, "p50_ms": 0.45},
    ]
    assert gpu_check.target_verdict(rows, on_gpu=True) == (
        "predict 32 rows p50 0.45 ms, target <= 0.4 (missed by 0.05 ms)"
    )
    rows[-1]["p50_ms"] = 0.4
    assert gpu_check.target_verdict(rows, on_gpu=True) == (
        "predict 32 rows p50 0.4 ms, target <= 0.4 (met)"
    )
    assert gpu_check.target_verdict(rows, on_gpu=False) is None
    assert gpu_check.target_verdict(rows[:2], on_gpu=True) is None
    failed = [{"mode": "predict", "batch": 32, "error": "CUDA error"}]
    assert gpu_check.target_verdict(failed, on_gpu=True) is None
