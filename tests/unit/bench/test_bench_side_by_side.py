"""Systems the bench keeps up side by side run without keep-warm (BENCHMARKS.md, session
32): an idle system's warm rows would run on the cores the measured one is using."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.bench import baseline, runner
from app.bench.runner import BenchOptions, side_by_side
from app.bench.targets import Target


def test_side_by_side_means_a_second_server_is_up() -> None:
    assert not side_by_side(BenchOptions(rates=[1]))
    assert side_by_side(BenchOptions(rates=[1], compare_baseline=True))
    assert side_by_side(BenchOptions(rates=[1], calibrate=True))
    assert side_by_side(BenchOptions(rates=[1], find_max=True))
    assert not side_by_side(BenchOptions(rates=[1], calibrate_only=True))


def _target(name: str) -> Target:
    return Target(name, "https://127.0.0.1:1", Path("ca.crt"), "key", "token", dict)


@pytest.mark.parametrize(
    ("compare", "serve_ms", "peer_warm"), [(True, 0, False), (False, 20, None)]
)
def test_the_started_systems_keep_warm_only_when_measured_alone(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    compare: bool,
    serve_ms: float,
    peer_warm: bool | None,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("batching:\n  keep_warm_ms: 20\n")
    seen: dict[str, Any] = {}

    @contextlib.contextmanager
    def serve_stack(_path: str, cfg: Any, *_a: Any, **_k: Any) -> Iterator[Target]:
        seen["serve"] = cfg.batching.keep_warm_ms
        yield _target("serve")

    @contextlib.contextmanager
    def baseline_target(*_a: Any, keep_warm: bool = True, **_k: Any) -> Iterator[Target]:
        seen["peer"] = keep_warm
        yield _target("baseline")

    monkeypatch.setattr(runner, "serve_stack", serve_stack)
    monkeypatch.setattr(runner, "baseline_target", baseline_target)
    opts = BenchOptions(rates=[1], compare_baseline=compare, config_path=str(config))
    with contextlib.ExitStack() as stack:
        up = runner._up(stack, opts, lambda _line: None)
    assert seen["serve"] == serve_ms
    assert seen.get("peer") == peer_warm
    assert set(up) == ({"serve", "baseline"} if compare else {"serve"})


def test_the_peer_process_takes_no_keep_warm_when_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("batching:\n  keep_warm_ms: 20\n")
    served: list[float] = []
    monkeypatch.setattr(
        baseline, "serve", lambda cfg, *_a, **_k: served.append(cfg.batching.keep_warm_ms)
    )
    baseline.main(["--config", str(config)])
    baseline.main(["--config", str(config), "--no-keep-warm"])
    assert served == [20, 0]
