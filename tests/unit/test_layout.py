"""The two halves keep apart: the gateway never loads torch, the model never FastAPI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

GATEWAY_MODULES = [
    "app.serve.ingress",
    "app.serve.build",
    "app.api.app",
    "app.cli.main",
    "app.api.routes.predict",
    "model.deployment",
]


@pytest.mark.parametrize("module", GATEWAY_MODULES)
def test_gateway_side_import_does_not_load_torch(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_model_package_never_imports_fastapi() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "model").rglob("*.py")
        if any(
            line.lstrip().startswith(
                ("import fastapi", "from fastapi", "import starlette", "from starlette")
            )
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []


def test_app_package_never_imports_torch_directly() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "app").rglob("*.py")
        if any(
            line.lstrip().startswith(("import torch", "from torch"))
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []
