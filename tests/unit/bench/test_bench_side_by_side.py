"""Systems the bench keeps up side by side keep warm only briefly (BENCHMARKS.md,
sessions 32-33): an idle system's warm rows would run on the cores the measured one is
using, so each stops warming within the warm-up that starts another's run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.bench import baseline, runner
from app.bench.runner import BenchOptions, side_by_side, side_by_side_keep_warm_s
from app.bench.targets import Target


def test_side_by_side_means_a_second_server_is_up() -> None:
    assert not side_by_side(BenchOptions(rates=[1]))
    assert side_by_side(BenchOptions(rates=[1], compare_baseline=True))
    assert side_by_side(BenchOptions(rates=[1], calibrate=True))
    assert side_by_side(BenchOptions(rates=[1], find_max=True))
    assert not side_by_side(BenchOptions(rates=[1], calibrate_only=True))


def test_the_side_by_side_horizon_ends_within_the_warm_up_but_spans_the_slowest_gap() -> None:
    alone = BenchOptions(rates=[1, 200])
    assert side_by_side_keep_warm_s(alone, 60) is None  # as configured
    paired = BenchOptions(rates=[1, 200], compare_baseline=True, warmup_s=5)
    assert side_by_side_keep_warm_s(paired, 60) == 4  # stops a second before runs count
    assert side_by_side_keep_warm_s(paired, 3) == 3  # never longer than configured
    slow = BenchOptions(rates=[0.1], compare_baseline=True, warmup_s=5)
    assert side_by_side_keep_warm_s(slow, 60) == 15  # requests 10 s apart stay warm
    short = BenchOptions(rates=[1], calibrate=True, warmup_s=0)
    assert side_by_side_keep_warm_s(short, 60) == 1.5


def _target(name: str) -> Target:
    return Target(name, "https://127.0.0.1:1", Path("ca.crt"), "key", "token", dict)


@pytest.mark.parametrize(
    ("compare", "warm_ms", "serve_for_s", "peer_for_s"),
    [
        (True, 20, 4.0, 4.0),
        (False, 20, 60.0, "not started"),
        (True, 0, 60.0, None),  # keep-warm off: nothing to shorten
    ],
)
def test_the_started_systems_keep_warm_only_briefly_when_side_by_side(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    compare: bool,
    warm_ms: float,
    serve_for_s: float,
    peer_for_s: float | str | None,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"batching:\n  keep_warm_ms: {warm_ms}\n  keep_warm_for_s: 60\n")
    seen: dict[str, Any] = {"peer": "not started"}

    @contextlib.contextmanager
    def serve_stack(_path: str, cfg: Any, *_a: Any, **_k: Any) -> Iterator[Target]:
        seen["serve"] = (cfg.batching.keep_warm_ms, cfg.batching.keep_warm_for_s)
        yield _target("serve")

    @contextlib.contextmanager
    def baseline_target(*_a: Any, keep_warm_for_s: Any = None, **_k: Any) -> Iterator[Target]:
        seen["peer"] = keep_warm_for_s
        yield _target("baseline")

    monkeypatch.setattr(runner, "serve_stack", serve_stack)
    monkeypatch.setattr(runner, "baseline_target", baseline_target)
    monkeypatch.setattr(runner, "fetch_stats_at", lambda *_a: {"predictor": {"engine": "torch"}})
    opts = BenchOptions(
        rates=[1, 200], compare_baseline=compare, config_path=str(config), warmup_s=5
    )
    with contextlib.ExitStack() as stack:
        up = runner._up(stack, opts, lambda _line: None)
    assert seen["serve"] == (warm_ms, serve_for_s)
    assert seen["peer"] == peer_for_s
    assert set(up) == ({"serve", "baseline"} if compare else {"serve"})


def test_the_peer_process_takes_the_horizon_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("batching:\n  keep_warm_ms: 20\n  keep_warm_for_s: 60\n")
    served: list[tuple[float, float]] = []
    monkeypatch.setattr(
        baseline,
        "serve",
        lambda cfg, *_a, **_k: served.append(
            (cfg.batching.keep_warm_ms, cfg.batching.keep_warm_for_s)
        ),
    )
    baseline.main(["--config", str(config)])
    baseline.main(["--config", str(config), "--keep-warm-for", "5"])
    assert served == [(20, 60), (20, 5)]


def test_each_run_records_how_far_the_idle_systems_warmed_into_its_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bodies = {
        "https://serve": {"keep_warm": {"sent": 40, "last_at": 995.5}},
        "https://peer": {"keep_warm": {"sent": 900, "last_at": 1002.25}},
        "https://off": {"requests": {}},  # keep-warm off: no block in /stats
    }
    monkeypatch.setattr(runner, "fetch_stats_at", lambda url, _ca, _token: bodies[url])
    up = {
        name: Target(name, url, None, "key", "token", dict)
        for name, url in [
            ("serve", "https://serve"),
            ("baseline", "https://peer"),
            ("third", "https://off"),
            ("hello", "https://hello-has-no-stats"),
        ]
    }
    assert runner.idle_keep_warm(up, "serve", window_start=1000.0) == {
        "baseline": {"sent": 900, "last_warm_into_window_s": 2.25}
    }
    assert runner.idle_keep_warm(up, "baseline", window_start=1000.0) == {
        "serve": {"sent": 40, "last_warm_into_window_s": -4.5}
    }


@pytest.mark.parametrize(
    ("setting", "serve_stats", "peer_engine", "warned"),
    [
        ("serve", {"predictor": {"engine": "onnxruntime<=4+torch"}}, "onnxruntime<=4+torch", False),
        ("serve", {"predictor": {"engine": "torch"}}, "torch", False),
        ("serve", {"error": "HTTP 401"}, None, True),  # unknown: the peer chooses its own
        ("auto", {"predictor": {"engine": "onnxruntime<=4+torch"}}, "auto", False),
    ],
)
def test_the_peer_is_started_on_the_engine_serve_chose(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    serve_stats: dict[str, Any],
    peer_engine: str | None,
    warned: bool,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("batching:\n  keep_warm_ms: 0\n")
    seen: dict[str, Any] = {}

    @contextlib.contextmanager
    def serve_stack(*_a: Any, **_k: Any) -> Iterator[Target]:
        yield _target("serve")

    @contextlib.contextmanager
    def baseline_target(*_a: Any, engine: Any = "missing", **_k: Any) -> Iterator[Target]:
        seen["engine"] = engine
        yield _target("baseline")

    monkeypatch.setattr(runner, "serve_stack", serve_stack)
    monkeypatch.setattr(runner, "baseline_target", baseline_target)
    monkeypatch.setattr(runner, "fetch_stats_at", lambda *_a, **_k: serve_stats)
    lines: list[str] = []
    opts = BenchOptions(
        rates=[200], compare_baseline=True, config_path=str(config), peer_engine=setting
    )
    with contextlib.ExitStack() as stack:
        runner._up(stack, opts, lines.append)
    assert seen["engine"] == peer_engine
    assert any("Serve's engine is unknown" in line for line in lines) is warned


def test_the_peer_process_takes_the_engine_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("serving:\n  predictor_engine: auto\n")
    served: list[str] = []
    monkeypatch.setattr(
        baseline, "serve", lambda cfg, *_a, **_k: served.append(cfg.serving.predictor_engine)
    )
    baseline.main(["--config", str(config)])
    baseline.main(["--config", str(config), "--engine", "onnxruntime<=8+torch"])
    assert served == ["auto", "onnxruntime<=8+torch"]
    with pytest.raises(SystemExit):
        baseline.main(["--config", str(config), "--engine", "onnxruntime<=8"])
    assert "not an engine setting" in capsys.readouterr().err
    assert served == ["auto", "onnxruntime<=8+torch"]
