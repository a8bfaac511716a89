"""Request bodies (real, varied windows) and process discovery for the benchmark."""

from __future__ import annotations

import os
import subprocess
import time

import orjson
import pytest

from app.bench import payloads, procs
from app.gateway.schemas import BatchPredictRequest, PredictRequest
from model.common.features import WINDOW


def test_payload_window_matches_the_model() -> None:
    assert payloads.WINDOW == WINDOW


def test_windows_are_distinct_real_bars_spread_over_the_series() -> None:
    offsets = payloads.window_offsets(2048)
    assert len(set(offsets)) == 2048
    assert offsets[0] == 0
    assert offsets[-1] == payloads.EURUSD_BARS - WINDOW
    loads = payloads.predict_payloads(64)
    bodies = [orjson.loads(b) for b in loads.bodies]
    assert len({tuple(b["close"]) for b in bodies}) == 64  # the feature cache cannot help
    for body in bodies[:3]:
        PredictRequest.model_validate(body)  # the API accepts them as they are
        assert 1.0 < body["close"][0] < 2.0  # EURUSD, not synthetic prices


def test_one_window_asks_for_the_cache_hit_case() -> None:
    assert len(set(payloads.predict_payloads(1).bodies)) == 1


def test_window_count_is_bounded_by_the_series() -> None:
    with pytest.raises(ValueError, match="at most"):
        payloads.window_offsets(payloads.EURUSD_BARS)


def test_batch_bodies_carry_the_requested_number_of_symbols() -> None:
    loads = payloads.batch_payloads(8, distinct=64)
    assert loads.path == "/predict/batch"
    assert loads.rows_per_request == 8
    assert len(loads.bodies) == 8
    request = BatchPredictRequest.model_validate(orjson.loads(loads.bodies[0]))
    assert len(request.items) == 8


def test_sample_reads_this_process_memory_and_cpu() -> None:
    s = procs.sample(os.getpid(), "me")
    assert s is not None
    assert s.rss_bytes > 10 * 2**20
    assert s.cpu_s > 0
    assert procs.peak_rss_mb_self() >= s.rss_bytes / 2**20 - 1


def test_serve_replicas_are_found_by_process_title() -> None:
    # Ray titles its workers like this (setproctitle); `exec -a` does the same to argv[0].
    title = "ray::ServeReplica:benchapp:cnn_lstm_predictor"
    child = subprocess.Popen(["bash", "-c", f"exec -a '{title}' sleep 30"])
    try:
        deadline = time.monotonic() + 5
        found: dict[int, str] = {}
        while child.pid not in found and time.monotonic() < deadline:
            found = procs.serve_processes("benchapp")
            time.sleep(0.05)
        assert found.get(child.pid) == "replica:cnn_lstm_predictor"
        assert child.pid not in procs.serve_processes("otherapp")
        assert child.pid in procs.serve_processes("benchapp", under=os.getpid())
        assert child.pid not in procs.serve_processes("benchapp", under=child.pid + 10**6)
        before = procs.snapshot({child.pid: "replica:cnn_lstm_predictor"})
        rows = procs.usage(before, before, 1.0)
        assert rows[0]["name"] == "replica:cnn_lstm_predictor"
        assert rows[0]["cpu_pct_of_core"] == 0.0
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["ray::ServeReplica:cnnlstm:gateway.handle_request_with_rejection"], "replica:gateway"),
        (["ray::ServeReplica:cnnlstm:cnn_lstm_predictor"], "replica:cnn_lstm_predictor"),
        (["ray::ServeReplica:otherapp:gateway"], None),
        (["ray::ProxyActor.receive_asgi_messages"], "ProxyActor"),
        (["ray::IDLE"], None),
        (["/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet", "--x"], "raylet"),
        (
            ["/venv/bin/python", "-u", "/venv/site-packages/ray/_private/log_monitor.py"],
            "log_monitor",
        ),
        (["/venv/bin/python", "dashboard.py"], None),  # not Ray's
        ([], None),
    ],
)
def test_processes_are_labelled_by_title(argv: list[str], expected: str | None) -> None:
    assert procs.label(argv, "cnnlstm") == expected
