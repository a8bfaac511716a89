"""ruff and mypy stay clean as configured in pyproject.toml (CI runs them here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_reports_nothing() -> None:
    out = _run("ruff", "check", "--output-format", "concise", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_reports_nothing() -> None:
    out = _run("mypy")
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_asyncio_wait_for_in_the_product() -> None:
    # model/common/tasks.py says why: on CPython 3.11 it can swallow a cancellation.
    import ast

    found = []
    for path in [*(ROOT / "app").rglob("*.py"), *(ROOT / "model").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "wait_for":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []
