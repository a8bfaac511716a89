"""The request path's hand-off: bounded, never raising, written off the request path."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.audit.chain import verify_trail
from app.audit.reader import Query, query_records
from app.audit.records import input_sha256
from app.audit.store import AuditStream
from app.audit.writer import AuditTrail
from app.config.audit import Audit
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


def test_a_record_submitted_after_stop_is_counted_as_dropped(tmp_path: Path) -> None:
    # A request finishing while the gateway shuts down: nothing will write it any more, so
    # it must show in audit_records_dropped_total rather than vanish.
    drops: list[int] = []
    t = trail(tmp_path, on_drop=drops.append)
    t.start()
    submit_one(t, 0, "r0")
    t.stop()
    submit_one(t, 1, "late")
    assert (t.written, t.dropped, drops) == (1, 1, [1])


def _count_appends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of records in each ``AuditStream.append`` (one write and flush each)."""
    calls: list[int] = []
    original = AuditStream.append

    def counting(self: AuditStream, lines: list[bytes], first_ts: str, last_ts: str) -> None:
        calls.append(len(lines))
        original(self, lines, first_ts, last_ts)

    monkeypatch.setattr(AuditStream, "append", counting)
    return calls


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_records_are_byte_identical_to_the_original_format(tmp_path: Path) -> None:
    # The digest of current.jsonl as the writer wrote it before batching and the cheaper
    # time formatting; the times cover microsecond rounding and its carry into a second.
    t0 = 1_800_000_000.0
    offsets = (0.0, 0.1234565, 0.9999996, 1.0000004, 59.5000005, 86399.999999, 86400.5)
    clock = _Clock(t0)
    t = AuditTrail(tmp_path, Audit(rotate_s=1e9), clock=clock, tick_s=0.05)
    t.start()
    for i, offset in enumerate(offsets):
        clock.now = t0 + offset
        bodies = [body(i), body(100 + i)][: 1 + i % 2]
        answers = [answer(b, ref) for b, ref in zip(bodies, (BLUE, GREEN), strict=False)]
        green = GREEN if i % 3 else None
        t.submit(
            f"req-{i}",
            f"user-{i}",
            [window_of(b) for b in bodies],
            answers,
            0.0123456789 * i,
            green,
        )
    t.stop()
    data = (tmp_path / "stream-0" / "current.jsonl").read_bytes()
    times = {r["request_id"]: r["ts"] for r in map(orjson.loads, data.splitlines())}
    assert list(times.values()) == [
        "2027-01-15T08:00:00.000000Z",
        "2027-01-15T08:00:00.123456Z",
        "2027-01-15T08:00:01.000000Z",
        "2027-01-15T08:00:01.000000Z",
        "2027-01-15T08:00:59.500000Z",
        "2027-01-16T07:59:59.999999Z",
        "2027-01-16T08:00:00.500000Z",
    ]
    assert data.count(b"\n") == 10
    digest = hashlib.sha256(data).hexdigest()
    assert digest == "3410a748a4c713107fe764f09866021304e6f6c41bb73e3bfb2eb0979a6ba42f"


def test_a_burst_is_written_with_fewer_writes_than_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    appends = _count_appends(monkeypatch)
    t = trail(tmp_path)
    for i in range(50):  # queued before the writer runs: they arrive together
        submit_one(t, i, f"r{i}")
    t.start()
    assert t.flush()
    t.stop()
    assert sum(appends) == t.written == 50
    assert len(appends) < 50
    lines = (tmp_path / "stream-0" / "current.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["request_id"] for line in lines] == [f"r{i}" for i in range(50)]


def test_records_trickling_in_share_a_write_within_the_batch_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    appends = _count_appends(monkeypatch)
    t = AuditTrail(tmp_path, Audit(), tick_s=0.05, batch_window_s=0.2)
    t.start()
    for i in range(10):
        submit_one(t, i, f"r{i}")
        time.sleep(0.002)
    assert t.flush()
    assert sum(appends) == t.written == 10
    assert len(appends) < 10
    t.stop()


def test_stop_writes_what_is_waiting_in_the_batch_window(tmp_path: Path) -> None:
    t = AuditTrail(tmp_path, Audit(), tick_s=0.05, batch_window_s=0.3)
    t.start()
    for i in range(3):
        submit_one(t, i, f"r{i}")
    t.stop()
    assert t.written == 3
    assert len(query_records(tmp_path, Query())) == 3


@pytest.mark.parametrize("window_s", [0.0, 0.005])
def test_a_quiet_file_is_sealed_by_age_within_tick_s(tmp_path: Path, window_s: float) -> None:
    t = AuditTrail(tmp_path, Audit(rotate_s=0.2), tick_s=0.05, batch_window_s=window_s)
    t.start()
    submit_one(t, 1, "r1")
    assert t.flush()
    sealed: list[Any] = []
    deadline = time.monotonic() + 5.0  # due 0.2 s after the record, checked every 0.05 s
    while not sealed and time.monotonic() < deadline:
        time.sleep(0.02)
        sealed = list((tmp_path / "stream-0").glob("*.jsonl.gz"))
    t.stop()
    assert len(sealed) == 1
    assert [r["request_id"] for r in query_records(tmp_path, Query())] == ["r1"]
    assert all(not report.problems for report in verify_trail(tmp_path))
