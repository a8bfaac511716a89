"""The request path's hand-off: bounded, never raising, written off the request path."""

from __future__ import annotations

from pathlib import Path

from app.audit.chain import verify_trail
from app.audit.reader import Query, query_records
from app.audit.records import input_sha256
from tests.unit.audit.audit_support import (
    BLUE,
    GREEN,
    answer,
    auditor_hash,
    body,
    submit_one,
    trail,
    window_of,
)


def test_a_full_queue_counts_dropped_records_and_never_raises(tmp_path: Path) -> None:
    drops: list[int] = []
    # The gateway wires on_drop to audit_records_dropped_total.
    t = trail(tmp_path, on_drop=drops.append, queue_size=3)
    # Not started: nothing drains the queue, so the fourth record on is over the bound.
    for i in range(5):
        submit_one(t, i, f"r{i}")
    assert (t.dropped, drops) == (2, [1, 1])


def test_a_batch_that_does_not_fit_is_dropped_whole(tmp_path: Path) -> None:
    t = trail(tmp_path, queue_size=2)
    bodies = [body(i) for i in range(3)]
    t.submit("r", "alice", [window_of(b) for b in bodies], [answer(b) for b in bodies], 0.0, None)
    assert t.dropped == 3


def test_records_are_written_with_the_canonical_input_hash(tmp_path: Path) -> None:
    t = trail(tmp_path)
    t.start()
    sent = {f"r{i}": submit_one(t, i, f"r{i}") for i in range(20)}
    t.stop()
    records = query_records(tmp_path, Query())
    assert sorted(r["request_id"] for r in records) == sorted(sent)
    for r in records:
        b = sent[r["request_id"]]
        assert r["input_sha256"] == auditor_hash(b) == input_sha256(window_of(b))
        assert r["principal"] == "alice"
        assert r["model"] == BLUE.to_json()
        assert r["outputs"] == {"expected_return": 0.001, "prob_up": 0.6, "horizon_bars": 1}
        assert r["latency_ms"] == 2.0
    assert t.dropped == 0
    assert all(not report.problems for report in verify_trail(tmp_path))


def test_only_the_rollouts_green_version_is_served_by_green(tmp_path: Path) -> None:
    t = trail(tmp_path)
    t.start()
    submit_one(t, 1, "blue-during-rollout", ref=BLUE, green=GREEN)
    submit_one(t, 2, "green-during-rollout", ref=GREEN, green=GREEN)
    submit_one(t, 3, "no-rollout", ref=GREEN, green=None)
    t.stop()
    served = {r["request_id"]: r["served_by"] for r in query_records(tmp_path, Query())}
    assert served == {
        "blue-during-rollout": "blue",
        "green-during-rollout": "green",
        "no-rollout": "blue",
    }


def test_a_writer_that_cannot_open_its_directory_keeps_accepting_and_counts(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    t = trail(blocker / "audit")
    t.start()  # logs the failure instead of raising
    submit_one(t, 1, "r1")
    t.stop()
    assert t.dropped == 1


def test_records_submitted_before_stop_are_all_written(tmp_path: Path) -> None:
    t = trail(tmp_path, rotate_bytes=4096)
    t.start()
    for i in range(300):
        submit_one(t, i % 7, f"r{i}")
    t.stop()
    assert t.written == 300
    assert len(query_records(tmp_path, Query())) == 300
    assert len(list((tmp_path / "stream-0").glob("*.gz"))) > 1
