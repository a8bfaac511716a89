"""Shared pieces for the rollout controller's unit tests: a registry with versions, a fake
clock, a recording notifier and validator, and an engine wired to them (no Ray)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.control.rollout_engine import RolloutEngine
from app.control.rollout_settings import RolloutSettings
from app.control.rollout_state import RolloutStore
from model.common.artifact import WEIGHTS_FILE
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.export import make_random_artifact

MODEL = "cnn_lstm"


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RecordingNotifier:
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, payload: dict[str, Any]) -> str | None:
        self.sent.append(payload)
        return None


@dataclass
class FakeValidator:
    """Stands in for the predictor's golden-output check."""

    refuse: dict[str, str] = field(default_factory=dict)  # version -> why
    calls: list[ModelRef] = field(default_factory=list)

    async def __call__(self, ref: ModelRef) -> str | None:
        self.calls.append(ref)
        return self.refuse.get(ref.version)


async def run_now(fn: Callable[..., Any], *args: Any) -> Any:
    """``run_blocking`` without threads: the tests are deterministic and single-threaded."""
    return fn(*args)


def flip_weights_byte(registry_root: Path, version: str, offset: int = 200) -> None:
    path = registry_root / MODEL / version / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def point_default_at(registry_root: Path, version: str) -> None:
    """Move DEFAULT without the registry's own check (as a sync job copying files would)."""
    (registry_root / MODEL / "DEFAULT").write_text(version + "\n")


@pytest.fixture(scope="session")
def artifact_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Versions 1.0.0 (DEFAULT), 2.0.0 and 3.0.0, made once (torch) and copied per test."""
    root = tmp_path_factory.mktemp("rollout-artifacts") / "models"
    make_random_artifact(root, version="1.0.0", seed=1)
    make_random_artifact(root, version="2.0.0", seed=2, make_default=False)
    make_random_artifact(root, version="3.0.0", seed=3, make_default=False)
    return root


@pytest.fixture
def registry_root(artifact_source: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(artifact_source, root)
    return root


@dataclass
class Rig:
    engine: RolloutEngine
    clock: FakeClock
    notifier: RecordingNotifier
    validator: FakeValidator
    registry: ModelRegistry
    store: RolloutStore
    settings: RolloutSettings

    def ref(self, version: str) -> ModelRef:
        return self.registry.resolve(MODEL, version)

    def predictors_hold(self, *versions: str, replica: str = "r1") -> None:
        keys = [self.ref(v).key for v in versions]
        self.engine.predictor_sync(replica, keys, {})

    def restart(self) -> RolloutEngine:
        """A new controller replica over the same state file."""
        self.engine = make_engine(
            self.settings, self.registry, self.store, self.clock, self.notifier, self.validator
        )
        return self.engine


def make_engine(
    settings: RolloutSettings,
    registry: ModelRegistry,
    store: RolloutStore,
    clock: FakeClock,
    notifier: RecordingNotifier,
    validator: FakeValidator,
) -> RolloutEngine:
    return RolloutEngine(
        settings,
        registry,
        store=store,
        validator=validator,
        notifier=notifier,
        clock=clock,
        run_blocking=run_now,
    )


def make_rig(registry_root: Path, **overrides: Any) -> Rig:
    values: dict[str, Any] = {
        "model": MODEL,
        "steps_pct": (25.0, 50.0, 100.0),
        "shift_interval_s": 10.0,
        "health_window_s": 10.0,
        "rollback_threshold_pct": 5.0,
        "min_samples": 20,
        "preload_timeout_s": 60.0,
        "sync_interval_s": 30.0,
        "predictor_stale_s": 15.0,
    }
    values.update(overrides)
    settings = RolloutSettings(**values)
    registry = ModelRegistry(registry_root)
    store = RolloutStore(registry_root / ".rollout" / "state.json")
    clock, notifier, validator = FakeClock(), RecordingNotifier(), FakeValidator()
    engine = make_engine(settings, registry, store, clock, notifier, validator)
    return Rig(engine, clock, notifier, validator, registry, store, settings)
