"""deploy/requirements.lock pins every dependency pyproject.toml declares, once each."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "deploy/requirements.lock").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip())
        assert match, f"not an exact pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{name} pinned twice"
        pins[name] = match.group(2)
    return pins


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = list(project["dependencies"])
    for extra, deps in project["optional-dependencies"].items():
        if extra != "gpu":  # nvidia-ml-py: only on GPU machines, not in a CPU install
            specs += deps
    names = {canonicalize_name(Requirement(s).name) for s in specs}
    return names - {"cnnlstm-serve", "torch"}


def test_every_declared_dependency_is_pinned_and_satisfies_its_range() -> None:
    locked = _locked()
    missing = sorted(_declared() - set(locked))
    assert missing == [], f"deploy/requirements.lock lacks {missing}: regenerate it"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name in locked:
            assert req.specifier.contains(locked[name], prereleases=True), (name, locked[name])


def test_torch_is_left_to_the_install_steps() -> None:
    assert "torch" not in _locked(), "torch is pinned to the CPU build by .ci/setup/Dockerfile"
    assert "-c deploy/requirements.lock" in (ROOT / ".ci/setup").read_text(encoding="utf-8")
    assert "-c deploy/requirements.lock" in (ROOT / "deploy/Dockerfile").read_text(encoding="utf-8")
