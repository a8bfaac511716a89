"""The predictor's versions during a rollout: preloading beside the default, promotion,
following the controller's routing, and fault injection (no Ray)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from model.common.artifact import WEIGHTS_FILE
from model.common.faults import InjectedFaultError
from model.common.features import NUM_FEATURES, WINDOW
from model.common.protocol import BatchResult, PredictBatch, Routing
from model.common.refs import ModelRef
from model.export import make_random_artifact
from model.follower import RoutingFollower
from model.service import PredictorService, PredictorSettings


@pytest.fixture
def green(registry_root: Path, random_ref: ModelRef) -> ModelRef:
    return make_random_artifact(registry_root, version="0.0.2", seed=5, make_default=False)


def _service(registry_root: Path, **kwargs: object) -> PredictorService:
    settings = PredictorSettings(
        registry_path=str(registry_root),
        warmup_batch_sizes=(1, 4),
        **kwargs,  # type: ignore[arg-type]
    )
    service = PredictorService(settings)
    service.load_default()
    return service


def _batch(ref: ModelRef, rows: int = 1) -> PredictBatch:
    rng = np.random.default_rng(0)
    return PredictBatch(ref, rng.normal(size=(rows, WINDOW, NUM_FEATURES)).astype(np.float32))


def test_preloading_another_version_never_makes_the_replica_unready(
    registry_root: Path, random_ref: ModelRef, green: ModelRef
) -> None:
    service = _service(registry_root)
    loader = threading.Thread(target=service.preload, args=(green,))
    loader.start()
    seen = [service.status().ready]
    while loader.is_alive():
        seen.append(service.status().ready)
        time.sleep(0.002)
    loader.join()
    assert seen
    assert all(seen)
    status = service.status()
    assert status.model == random_ref  # the default did not move
    assert set(status.loaded_models) == {random_ref.key, green.key}


def test_promote_makes_a_preloaded_version_the_default(
    registry_root: Path, random_ref: ModelRef, green: ModelRef
) -> None:
    service = _service(registry_root)
    service.preload(green)
    service.promote(green)
    assert service.default_ref == green
    assert service.versions.get(random_ref) is not None  # the old one still answers
    [result] = service.predict_batches([_batch(green)])
    assert isinstance(result, BatchResult)
    assert result.ref == green


def test_versions_no_longer_asked_for_leave_the_pins_but_stay_cached(
    registry_root: Path, random_ref: ModelRef, green: ModelRef
) -> None:
    service = _service(registry_root)
    service.preload(green)
    service.retain([random_ref])
    assert green.key not in service.versions.pinned_keys()
    assert service.versions.get(green) is not None
    assert green.key in service.status().loaded_models


def test_injected_faults_fail_exactly_the_configured_fraction(
    registry_root: Path, random_ref: ModelRef, green: ModelRef
) -> None:
    service = _service(registry_root, fault_injection={f"cnn_lstm:{green.version}": 0.1})
    green_results = [service.predict_batches([_batch(green)])[0] for _ in range(50)]
    blue_results = [service.predict_batches([_batch(random_ref)])[0] for _ in range(50)]
    failed = [i for i, r in enumerate(green_results) if isinstance(r, InjectedFaultError)]
    assert failed == [9, 19, 29, 39, 49]
    assert all(isinstance(r, BatchResult) for r in blue_results)
    assert service.status().extra["injected_fault_rows"] == 5


def test_malformed_features_fail_their_own_call_not_the_calls_batched_with_it(
    registry_root: Path, random_ref: ModelRef
) -> None:
    service = _service(registry_root)
    good = _batch(random_ref, rows=2)
    bad = PredictBatch(random_ref, np.zeros((1, WINDOW - 1, NUM_FEATURES), np.float32))
    alone = service.predict_batches([good])[0]
    first, second = service.predict_batches([good, bad])
    assert isinstance(first, BatchResult)
    assert isinstance(alone, BatchResult)
    assert first.forward_rows == 2  # the malformed call's rows never joined the forward
    np.testing.assert_array_equal(first.outputs, alone.outputs)
    assert isinstance(second, ValueError)
    assert "features must be" in str(second)


class FakeController:
    def __init__(self, routing: Routing) -> None:
        self.routing = routing
        self.reports: list[tuple[list[str], dict[str, str]]] = []

    async def sync(self, replica: str, loaded: list[str], failed: dict[str, str]) -> Routing:
        self.reports.append((sorted(loaded), dict(failed)))
        return self.routing


async def test_follower_preloads_green_then_serves_it_when_it_becomes_blue(
    registry_root: Path, random_ref: ModelRef, green: ModelRef
) -> None:
    service = _service(registry_root)
    controller = FakeController(
        Routing(blue=random_ref, green=green, preload=(random_ref, green), phase="preparing")
    )
    follower = RoutingFollower(service, controller.sync, "r1")
    assert await follower.step() is True  # loaded green
    assert await follower.step() is False  # nothing left to do
    assert controller.reports[-1][0] == sorted([random_ref.key, green.key])
    assert service.default_ref == random_ref

    controller.routing = Routing(blue=green, preload=(green,), phase="promoted")
    await follower.step()
    assert service.default_ref == green


async def test_follower_reports_a_version_it_cannot_load_and_does_not_retry_at_once(
    registry_root: Path, random_ref: ModelRef, green: ModelRef
) -> None:
    service = _service(registry_root)
    weights = registry_root / "cnn_lstm" / green.version / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))
    controller = FakeController(
        Routing(blue=random_ref, green=green, preload=(random_ref, green), phase="preparing")
    )
    follower = RoutingFollower(service, controller.sync, "r1", retry_failed_s=60.0)
    assert await follower.step() is True
    assert await follower.step() is False
    loaded, failed = controller.reports[-1]
    assert loaded == [random_ref.key]
    assert "ArtifactValidationError" in failed[green.key]
    assert service.status().ready  # the default keeps serving


def test_a_version_asked_for_again_is_pinned_again(
    registry_root: Path, random_ref: ModelRef, green: ModelRef
) -> None:
    service = _service(registry_root)
    service.preload(green)
    service.retain([random_ref])  # e.g. a routing read between validation and the start
    service.retain([random_ref, green])
    assert green.key in service.versions.pinned_keys()


async def test_a_failure_is_forgotten_once_the_version_is_no_longer_asked_for(
    registry_root: Path, random_ref: ModelRef, green: ModelRef
) -> None:
    # Green failed to load here (a transient fault: an OOM, a half-copied file), the
    # controller rolled the rollout back, the fault was fixed, and an operator starts the
    # same version again. The old failure must not be reported against the new rollout:
    # the controller rolls back from preparing on the first report naming one.
    service = _service(registry_root)
    weights = registry_root / "cnn_lstm" / green.version / WEIGHTS_FILE
    good = weights.read_bytes()
    data = bytearray(good)
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))
    rollout = Routing(blue=random_ref, green=green, preload=(random_ref, green), phase="preparing")
    controller = FakeController(rollout)
    follower = RoutingFollower(service, controller.sync, "r1", retry_failed_s=60.0)
    await follower.step()  # tries green and fails
    await follower.step()
    assert green.key in controller.reports[-1][1]  # the controller hears of it

    controller.routing = Routing(blue=random_ref, preload=(random_ref,), phase="rolled_back")
    await follower.step()
    weights.write_bytes(good)  # fixed

    controller.routing = rollout  # started again
    await follower.step()
    assert controller.reports[-1][1] == {}  # what this replica told the new rollout
    assert green.key in follower.loaded_keys()  # and it tried again at once
