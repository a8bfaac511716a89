"""The audit store: rotation into gzip files, the integrity chain, retention, restarts."""

from __future__ import annotations

import errno
import gzip
import os
import random
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from app.audit import store
from app.audit.chain import CHAIN, read_chain, verify_trail
from app.audit.reader import Query, query_records
from app.audit.records import TS_FORMAT, format_ts
from app.audit.store import AuditStream, claim_stream
from app.config.audit import Audit

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _stream(root: Path, clock: Clock, **kw: float) -> AuditStream:
    config = Audit(**{"rotate_bytes": 4096, "rotate_s": 3600, "retention_days": 30, **kw})
    return claim_stream(root, config, clock)


def _write(stream: AuditStream, clock: Clock, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        ts = format_ts(clock())
        line = orjson.dumps({"ts": ts, "request_id": f"r{i}", "item": 0, "pad": "x" * 200})
        stream.append([line + b"\n"], ts, ts)
        stream.tick()
        clock.now += 1.0


def _sealed(stream_dir: Path) -> list[Path]:
    return sorted(stream_dir.glob("audit-*.jsonl.gz"))


def _problems(root: Path) -> list[str]:
    return [p for report in verify_trail(root) for p in report.problems]


def test_records_rotate_into_gzip_files_that_hold_every_record(tmp_path: Path) -> None:
    clock = Clock()
    stream = _stream(tmp_path, clock)
    _write(stream, clock, 60)
    stream.close()
    sealed = _sealed(tmp_path / "stream-0")
    assert len(sealed) >= 2
    first = gzip.decompress(sealed[0].read_bytes()).splitlines()
    assert orjson.loads(first[0])["request_id"] == "r0"
    ids = [r["request_id"] for r in query_records(tmp_path, Query())]
    assert ids == [f"r{i}" for i in range(60)]
    assert _problems(tmp_path) == []
    # gzip's header says how hard it compressed (XFL, byte 8): 4 is the fastest level,
    # which keeps a seal's CPU burst off the serving replicas sharing the cores.
    assert {path.read_bytes()[8] for path in sealed} == {4}


def test_a_quiet_file_is_sealed_once_it_is_rotate_s_old(tmp_path: Path) -> None:
    clock = Clock()
    stream = _stream(tmp_path, clock, rotate_bytes=1 << 20, rotate_s=60)
    _write(stream, clock, 3)
    assert _sealed(tmp_path / "stream-0") == []
    clock.now += 60
    stream.tick()
    assert len(_sealed(tmp_path / "stream-0")) == 1
    assert not (tmp_path / "stream-0" / "current.jsonl").read_bytes()


def test_a_restarted_file_is_sealed_once_it_is_rotate_s_old(tmp_path: Path) -> None:
    # The age counts from the first record in the file, also when that was read back.
    clock = Clock()
    stream = _stream(tmp_path, clock, rotate_bytes=1 << 20, rotate_s=60)
    _write(stream, clock, 3)  # at T0, T0 + 1, T0 + 2
    stream.close()
    again = _stream(tmp_path, clock, rotate_bytes=1 << 20, rotate_s=60)
    clock.now = T0 + 59.9
    again.tick()
    assert _sealed(tmp_path / "stream-0") == []
    clock.now = T0 + 60
    again.tick()
    assert len(_sealed(tmp_path / "stream-0")) == 1
    _write(again, clock, 2, start=3)  # a new file: its age counts from r3
    clock.now = T0 + 60 + 59.9
    again.tick()
    assert len(_sealed(tmp_path / "stream-0")) == 1
    clock.now = T0 + 120
    again.tick()
    assert len(_sealed(tmp_path / "stream-0")) == 2
    assert _problems(tmp_path) == []


def test_format_ts_is_exactly_the_strftime_form() -> None:
    # Includes microsecond rounding (half to even) and its carry into the next second,
    # and times far apart with the same second, minute and day.
    rng = random.Random(14)
    times = [T0 + d for d in (0.0, 0.1234565, 0.9999995, 0.9999996, 1.0000004, 59.5000005)]
    times += [T0 + k * 86400.0 * 365 for k in range(-3, 4)]
    times += [T0 + rng.uniform(0, 3.0) for _ in range(2000)]
    times += [rng.uniform(-3e10, 2.5e11) for _ in range(2000)]  # years 1019 to 9891
    times += [round(T0 + rng.uniform(0, 9), 6) + rng.choice((-5e-7, 5e-7)) for _ in range(2000)]
    for at in times:
        assert format_ts(at) == datetime.fromtimestamp(at, tz=UTC).strftime(TS_FORMAT), at


def test_editing_one_record_in_a_sealed_file_fails_verify(tmp_path: Path) -> None:
    clock = Clock()
    stream = _stream(tmp_path, clock)
    _write(stream, clock, 40)
    target = _sealed(tmp_path / "stream-0")[0]
    lines = gzip.decompress(target.read_bytes()).replace(b'"r1"', b'"rX"', 1)
    target.write_bytes(gzip.compress(lines, mtime=0))
    assert any(target.name in p and "edited" in p for p in _problems(tmp_path))


def test_deleting_a_sealed_file_fails_verify(tmp_path: Path) -> None:
    clock = Clock()
    stream = _stream(tmp_path, clock)
    _write(stream, clock, 40)
    target = _sealed(tmp_path / "stream-0")[0]
    target.unlink()
    assert any(target.name in p and "removed" in p for p in _problems(tmp_path))


def test_editing_or_dropping_a_chain_entry_fails_verify(tmp_path: Path) -> None:
    clock = Clock()
    stream = _stream(tmp_path, clock)
    _write(stream, clock, 40)
    chain = tmp_path / "stream-0" / CHAIN
    lines = chain.read_bytes().splitlines(keepends=True)
    edited = orjson.loads(lines[1])
    edited["records"] += 1
    chain.write_bytes(b"".join([lines[0], orjson.dumps(edited) + b"\n", *lines[2:]]))
    assert any("broken link" in p for p in _problems(tmp_path))
    chain.write_bytes(b"".join([lines[0], *lines[2:]]))  # drop one seal entry
    assert any("broken link" in p for p in _problems(tmp_path))


def test_a_file_that_is_not_in_the_chain_fails_verify(tmp_path: Path) -> None:
    clock = Clock()
    stream = _stream(tmp_path, clock)
    _write(stream, clock, 40)
    forged = tmp_path / "stream-0" / "audit-999999-20300101T000000Z.jsonl.gz"
    forged.write_bytes(gzip.compress(b"{}\n"))
    assert any("not in the chain" in p for p in _problems(tmp_path))


def test_retention_removes_old_files_and_verify_still_passes(tmp_path: Path) -> None:
    clock = Clock()
    stream = _stream(tmp_path, clock, retention_days=1)
    _write(stream, clock, 40)
    before = _sealed(tmp_path / "stream-0")
    assert before
    clock.now += 2 * 86400
    stream.tick()  # seals the old tail too, then retires everything past the retention
    assert _sealed(tmp_path / "stream-0") == []
    events = [e["event"] for e in read_chain(tmp_path / "stream-0")[0]]
    assert events.count("retire") == events.count("seal") > len(before)
    _write(stream, clock, 2, start=40)
    assert _problems(tmp_path) == []
    assert [r["request_id"] for r in query_records(tmp_path, Query())] == ["r40", "r41"]


def test_a_restart_takes_the_stream_back_and_continues_its_chain(tmp_path: Path) -> None:
    clock = Clock()
    stream = _stream(tmp_path, clock)
    _write(stream, clock, 30)
    stream.close()
    again = _stream(tmp_path, clock)
    assert again.directory.name == "stream-0"
    _write(again, clock, 30, start=30)
    again.seal()
    assert _problems(tmp_path) == []
    ids = [r["request_id"] for r in query_records(tmp_path, Query())]
    assert ids == [f"r{i}" for i in range(60)]


def test_a_second_writer_gets_its_own_stream(tmp_path: Path) -> None:
    clock = Clock()
    first, second = _stream(tmp_path, clock), _stream(tmp_path, clock)
    assert (first.directory.name, second.directory.name) == ("stream-0", "stream-1")
    _write(first, clock, 5)
    _write(second, clock, 5, start=5)
    first.seal()
    second.seal()
    assert len(query_records(tmp_path, Query())) == 10
    assert [r.stream for r in verify_trail(tmp_path)] == ["stream-0", "stream-1"]
    assert _problems(tmp_path) == []


def test_a_torn_last_record_from_a_crash_is_dropped_on_restart(tmp_path: Path) -> None:
    clock = Clock()
    stream = _stream(tmp_path, clock, rotate_bytes=1 << 20)
    _write(stream, clock, 3)
    stream.close()
    with (tmp_path / "stream-0" / "current.jsonl").open("ab") as f:
        f.write(b'{"ts": "20')  # the process died mid-write
    again = _stream(tmp_path, clock, rotate_bytes=1 << 20)
    _write(again, clock, 1, start=3)
    again.seal()
    assert [r["request_id"] for r in query_records(tmp_path, Query())] == ["r0", "r1", "r2", "r3"]
    assert _problems(tmp_path) == []


class _DiskFullPartWay:
    """current.jsonl's file when the disk fills during a write: the first half of the batch
    reaches the file, then ENOSPC (what a buffered write larger than its buffer does); the
    writes after it succeed (space was freed)."""

    def __init__(self, file: object) -> None:
        self._file = file
        self._failed = False

    def write(self, data: bytes) -> int:
        if self._failed:
            return self._file.write(data)  # type: ignore[attr-defined,no-any-return]
        self._failed = True
        self._file.write(data[: len(data) // 2])  # type: ignore[attr-defined]
        self._file.flush()  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> object:
        return getattr(self._file, name)


def test_a_write_that_fails_part_way_leaves_no_torn_record_in_the_file(tmp_path: Path) -> None:
    clock = Clock()
    stream = _stream(tmp_path, clock, rotate_bytes=1 << 20)
    _write(stream, clock, 2)
    stream._file = _DiskFullPartWay(stream._file)  # type: ignore[assignment]
    with pytest.raises(OSError, match="No space left"):
        _write(stream, clock, 1, start=2)  # r2 is lost, and the writer counts it
    _write(stream, clock, 2, start=3)  # space again: r3 must not be glued to half of r2
    expected = ["r0", "r1", "r3", "r4"]
    assert [r["request_id"] for r in query_records(tmp_path, Query())] == expected
    stream.close()
    again = _stream(tmp_path, clock, rotate_bytes=1 << 20)  # a restart reads it back
    again.seal()
    assert [r["request_id"] for r in query_records(tmp_path, Query())] == expected
    assert _problems(tmp_path) == []


def test_a_chain_entry_cut_short_by_a_full_disk_leaves_the_chain_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At a full disk write(2) takes what fits and says how much; the next call fails.
    real_write = os.write
    calls = {"n": 0}

    def write(fd: int, data: bytes) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(CHAIN) or calls["n"] > 1:
            return real_write(fd, data)
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    clock = Clock()
    stream = _stream(tmp_path, clock, rotate_bytes=1 << 20)
    _write(stream, clock, 3)
    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OSError, match="No space left"):
        stream.seal()  # the writer logs it and seals again on its next tick
    monkeypatch.undo()
    stream.seal()
    _write(stream, clock, 2, start=3)
    stream.seal()
    stream.close()
    assert _problems(tmp_path) == []
    again = _stream(tmp_path, clock)  # and a restart can still take the stream back
    assert again.directory.name == "stream-0"
    ids = [r["request_id"] for r in query_records(tmp_path, Query())]
    assert ids == ["r0", "r1", "r2", "r3", "r4"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query(request_id="r7"), ["r7"]),
        (Query(since=format_ts(T0 + 35), until=format_ts(T0 + 37)), ["r35", "r36", "r37"]),
    ],
)
def test_query_filters_by_request_id_and_time(
    tmp_path: Path, query: Query, expected: list[str]
) -> None:
    clock = Clock()
    stream = _stream(tmp_path, clock)
    _write(stream, clock, 40)
    assert [r["request_id"] for r in query_records(tmp_path, query)] == expected


def test_a_query_while_the_writer_seals_misses_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.audit import reader

    clock = Clock()
    stream = _stream(tmp_path, clock)
    _write(stream, clock, 33)  # some sealed files, and records still in current.jsonl
    assert (tmp_path / "stream-0" / "current.jsonl").stat().st_size > 0
    real_lines, sealed = reader._lines, []

    def lines(path: Path) -> object:
        if not sealed:  # the writer seals while the query reads its first file
            sealed.append(stream.seal())
        return real_lines(path)

    monkeypatch.setattr(reader, "_lines", lines)
    ids = [r["request_id"] for r in query_records(tmp_path, Query())]
    assert ids == [f"r{i}" for i in range(33)]


def test_a_seal_finishes_the_gzip_written_with_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def at_once(source: Path, target: Path) -> object:
        raise AssertionError("a file was compressed at once when it was sealed")

    monkeypatch.setattr(store, "_gzip_into", at_once)
    clock = Clock()
    stream = _stream(tmp_path, clock)
    _write(stream, clock, 60)
    sealed = _sealed(tmp_path / "stream-0")
    assert len(sealed) >= 2
    assert (tmp_path / "stream-0" / ".audit-pending.tmp").exists(), "the next file's stream"
    stream.close()
    assert not (tmp_path / "stream-0" / ".audit-pending.tmp").exists()
    ids = [r["request_id"] for r in query_records(tmp_path, Query())]
    assert ids == [f"r{i}" for i in range(60)]
    assert _problems(tmp_path) == []


def test_a_file_read_back_after_a_restart_is_compressed_at_start_not_at_its_seal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records a restart reads back go into the new pending stream when the stream is
    claimed (before the replica serves), so the file's seal only finishes that stream."""

    def at_once(source: Path, target: Path) -> object:
        raise AssertionError("a file was compressed at once when it was sealed")

    monkeypatch.setattr(store, "_gzip_into", at_once)
    clock = Clock()
    stream = _stream(tmp_path, clock)
    _write(stream, clock, 5)  # under rotate_bytes: stays in current.jsonl
    stream.close()
    pending = tmp_path / "stream-0" / ".audit-pending.tmp"
    assert not pending.exists()
    again = _stream(tmp_path, clock)
    assert pending.exists(), "the read-back records' stream, started with the claim"
    _write(again, clock, 40, start=5)
    again.close()
    ids = [r["request_id"] for r in query_records(tmp_path, Query())]
    assert ids == [f"r{i}" for i in range(45)]
    assert _problems(tmp_path) == []


def test_a_read_back_file_is_compressed_whole_when_its_pending_stream_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    whole = store._gzip_into

    def spy(source: Path, target: Path) -> object:
        calls.append(source)
        return whole(source, target)

    monkeypatch.setattr(store, "_gzip_into", spy)
    clock = Clock()
    stream = _stream(tmp_path, clock)
    _write(stream, clock, 5)
    stream.close()
    monkeypatch.setattr(store._PendingGzip, "start", classmethod(lambda cls, path: None))
    again = _stream(tmp_path, clock)
    _write(again, clock, 40, start=5)
    again.close()
    # Without a pending stream every seal compresses current.jsonl itself.
    assert calls
    assert len(calls) == len(_sealed(tmp_path / "stream-0"))
    ids = [r["request_id"] for r in query_records(tmp_path, Query())]
    assert ids == [f"r{i}" for i in range(45)]
    assert _problems(tmp_path) == []
