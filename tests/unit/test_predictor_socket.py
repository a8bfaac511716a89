"""The predictor's same-node socket: frames, the replica's server, the gateway's client.

Real Unix sockets on this machine, no Ray: the server answers with a
:class:`tests.fakes.FakePredictor` (which records what reached it) and the client's
fallback is a second one standing in for the deployment handle, so each test can see
which way a call went.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.gateway.predictor_socket import PredictorSockets
from model.common.failures import FailureKind
from model.common.features import NUM_FEATURES, WINDOW
from model.common.protocol import BatchResult, PredictBatch, PredictError
from model.common.wire import (
    PREFIX_BYTES,
    Frames,
    WireError,
    decode_answer,
    decode_call,
    encode_answer,
    encode_call,
    frame_length,
    socket_directory,
)
from model.socket_server import SocketServer
from tests.fakes import FAKE_REF, FakePredictor, fake_outputs


def _batch(rows: int, value: float = 0.0) -> PredictBatch:
    features = np.arange(rows * WINDOW * NUM_FEATURES, dtype=np.float32).reshape(
        rows, WINDOW, NUM_FEATURES
    )
    return PredictBatch(
        ref=FAKE_REF, features=features + value, request_ids=tuple(f"r{i}" for i in range(rows))
    )


@pytest.fixture
def directory() -> Iterator[Path]:
    # A short path: a Unix socket's path may hold ~100 bytes, pytest's tmp_path can be longer.
    root = Path(tempfile.mkdtemp(prefix="sk", dir="/tmp"))
    yield socket_directory("n" * 56, "cnnlstm", base=root)
    shutil.rmtree(root, ignore_errors=True)


async def _server(directory: Path, predictor: FakePredictor, name: str = "r1") -> SocketServer:
    server = SocketServer(directory / f"{name}.sock", predictor.dispatch)
    await server.start()
    return server


async def _client(directory: Path, handle: FakePredictor) -> PredictorSockets:
    sockets = PredictorSockets(directory, handle.dispatch, scan_s=0.05)
    await sockets.scan()
    return sockets


# -- frames -------------------------------------------------------------------------------


def _unframe(frame: bytes) -> bytes:
    assert frame_length(frame[:PREFIX_BYTES]) == len(frame) - PREFIX_BYTES
    return frame[PREFIX_BYTES:]


def test_a_call_and_its_answers_cross_the_wire_unchanged() -> None:
    batch = _batch(3, 0.5)
    call_id, back = decode_call(_unframe(encode_call(7, batch)))
    assert call_id == 7
    assert back.ref == batch.ref
    assert back.request_ids == batch.request_ids
    assert not back.warm
    np.testing.assert_array_equal(back.features, batch.features)
    warm = PredictBatch(ref=batch.ref, features=batch.features, warm=True)
    assert decode_call(_unframe(encode_call(8, warm)))[1].warm  # a keep-warm call stays one

    result = BatchResult(
        ref=FAKE_REF,
        outputs=fake_outputs(batch.features),
        forward_rows=9,
        model_ms=1.25,
        horizon_bars=3,
        predictor_wait_ms=0.5,
        replica="abc",
    )
    answer_id, answer = decode_answer(_unframe(encode_answer(7, result)))
    assert answer_id == 7
    assert isinstance(answer, BatchResult)
    assert (answer.ref, answer.forward_rows, answer.model_ms) == (FAKE_REF, 9, 1.25)
    assert (answer.horizon_bars, answer.predictor_wait_ms, answer.replica) == (3, 0.5, "abc")
    # float32 on the wire, like the forward's own outputs
    np.testing.assert_allclose(answer.outputs, result.outputs, rtol=1e-6)

    error = PredictError(FailureKind.MODEL_NOT_FOUND, "no such version")
    assert decode_answer(_unframe(encode_answer(8, error))) == (8, error)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x05\x00\x00\x00{", b"\x02\x00\x00\x00[]", b"\x02\x00\x00\x00{}\x00\x00"],
)
def test_a_frame_that_does_not_decode_is_a_wire_error(payload: bytes) -> None:
    with pytest.raises(WireError):
        decode_call(payload)
    with pytest.raises(WireError):
        decode_answer(payload)


def test_a_frame_length_out_of_bounds_is_a_wire_error() -> None:
    with pytest.raises(WireError):
        frame_length(b"\xff\xff\xff\xff")
    with pytest.raises(WireError):
        frame_length(b"\x00\x00\x00\x00")


def test_frames_come_out_whole_however_the_bytes_arrive() -> None:
    calls = [encode_call(i, _batch(i + 1, float(i))) for i in range(3)]
    stream = b"".join(calls)
    expected = [_unframe(c) for c in calls]
    # all at once, byte by byte, and cut across frame boundaries
    assert Frames().feed(stream) == expected
    frames = Frames()
    assert [f for i in range(len(stream)) for f in frames.feed(stream[i : i + 1])] == expected
    frames = Frames()
    cut = len(calls[0]) + 3  # three bytes into the second frame's length prefix
    assert frames.feed(stream[:cut]) == expected[:1]
    assert frames.feed(stream[cut:]) == expected[1:]
    assert frames.feed(b"") == []


def test_a_length_no_peer_sends_stops_the_frames() -> None:
    with pytest.raises(WireError):
        Frames().feed(encode_call(1, _batch(1)) + b"\xff\xff\xff\xff")


def test_socket_directories_are_per_node_and_application_and_short() -> None:
    a = socket_directory("a" * 56, "cnnlstm")
    assert a != socket_directory("b" * 56, "cnnlstm")
    assert a != socket_directory("a" * 56, "other")
    long_app = socket_directory("a" * 56, "x" * 300)
    assert len(str(long_app / "12345678.sock")) < 100


# -- server and client --------------------------------------------------------------------


async def test_batches_go_over_the_socket_when_a_replica_listens_here(directory: Path) -> None:
    replica, handle = FakePredictor(), FakePredictor()
    server = await _server(directory, replica)
    sockets = await _client(directory, handle)
    seen: list[str] = []
    sockets.on_call = seen.append  # the gateway wires its predictor_calls_total here
    try:
        batch = _batch(4)
        answer = await sockets.dispatch(batch)
        assert isinstance(answer, BatchResult)
        np.testing.assert_allclose(answer.outputs, fake_outputs(batch.features), rtol=1e-6)
        assert len(replica.calls) == 1
        assert handle.calls == []
        assert replica.calls[0].request_ids == batch.request_ids
        assert sockets.view()["calls"] == {"socket": 1, "handle": 0}
        assert seen == ["socket"]
        assert sockets.view()["connected"] == ["r1.sock"]
        assert server.calls == 1
    finally:
        await sockets.stop()
        await server.stop()


async def test_concurrent_calls_share_a_connection_and_each_gets_its_own_answer(
    directory: Path,
) -> None:
    replica = FakePredictor()
    slow_first = asyncio.Event()

    async def answer(batch: PredictBatch) -> BatchResult | PredictError:
        if batch.request_ids[0] == "slow":
            await slow_first.wait()  # answered after the calls sent behind it
        return await replica.dispatch(batch)

    server = SocketServer(directory / "r1.sock", answer)
    await server.start()
    sockets = await _client(directory, FakePredictor())
    try:
        batches = [
            PredictBatch(FAKE_REF, _batch(2, float(i)).features, ("slow" if i == 0 else f"b{i}",))
            for i in range(5)
        ]
        calls = [asyncio.ensure_future(sockets.dispatch(b)) for b in batches]
        await asyncio.sleep(0.05)
        assert [c.done() for c in calls] == [False, True, True, True, True]
        slow_first.set()
        answers = await asyncio.gather(*calls)
        for batch, got in zip(batches, answers, strict=True):
            assert isinstance(got, BatchResult)
            np.testing.assert_allclose(got.outputs, fake_outputs(batch.features), rtol=1e-6)
    finally:
        await sockets.stop()
        await server.stop()


async def test_a_call_the_replica_can_answer_now_is_answered_as_it_is_read(
    directory: Path,
) -> None:
    # The replica answers one-row calls on the spot (an idle replica's inline forward)
    # and sends the rest to its queue (the async ``answer``).
    queued = FakePredictor()
    now: list[PredictBatch] = []
    in_flight_seen: list[int] = []

    def answer_now(batch: PredictBatch) -> BatchResult | PredictError | None:
        if batch.rows != 1:
            return None
        now.append(batch)
        in_flight_seen.append(server.in_flight)
        return BatchResult(
            ref=batch.ref,
            outputs=fake_outputs(batch.features),
            forward_rows=1,
            model_ms=0.5,
            horizon_bars=1,
            predictor_wait_ms=0.0,
            replica="now",
        )

    server = SocketServer(directory / "r1.sock", queued.dispatch, answer_now)
    await server.start()
    sockets = await _client(directory, FakePredictor())
    try:
        lone = await sockets.dispatch(_batch(1, 3.0))
        pair = await sockets.dispatch(_batch(2, 4.0))
        assert isinstance(lone, BatchResult)
        assert lone.replica == "now"
        np.testing.assert_allclose(lone.outputs, fake_outputs(_batch(1, 3.0).features))
        assert isinstance(pair, BatchResult)
        assert pair.replica != "now"
        assert [b.rows for b in now] == [1]
        assert [b.rows for b in queued.calls] == [2]
        assert in_flight_seen == [0]  # no task was started for the lone call
        assert server.calls == 2
    finally:
        await sockets.stop()
        await server.stop()


def test_both_ends_work_on_uvloop_the_replicas_loop(directory: Path) -> None:
    # Ray runs replicas on uvloop, whose transports are not asyncio.Transport subclasses.
    uvloop = pytest.importorskip("uvloop")
    replica = FakePredictor()

    def answer_now(batch: PredictBatch) -> BatchResult | PredictError | None:
        return PredictError(FailureKind.NOT_READY, "now") if batch.rows == 1 else None

    async def main() -> None:
        server = SocketServer(directory / "r1.sock", replica.dispatch, answer_now)
        await server.start()
        sockets = await _client(directory, FakePredictor())
        try:
            assert await sockets.dispatch(_batch(1)) == PredictError(FailureKind.NOT_READY, "now")
            assert isinstance(await sockets.dispatch(_batch(2)), BatchResult)
            assert sockets.view()["calls"] == {"socket": 2, "handle": 0}
            assert len(replica.calls) == 1
        finally:
            await sockets.stop()
            await server.stop(drain_s=0.1)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), 10.0))


async def test_an_exception_answering_now_comes_back_as_a_typed_error(directory: Path) -> None:
    def answer_now(batch: PredictBatch) -> BatchResult | PredictError | None:
        raise RuntimeError("boom")

    server = SocketServer(directory / "r1.sock", FakePredictor().dispatch, answer_now)
    await server.start()
    sockets = await _client(directory, FakePredictor())
    try:
        answer = await sockets.dispatch(_batch(1))
        assert isinstance(answer, PredictError)
        # and the connection still serves the next call
        assert isinstance(await sockets.dispatch(_batch(1)), PredictError)
        assert sockets.view()["broken_connections"] == 0
    finally:
        await sockets.stop()
        await server.stop()


async def test_typed_errors_come_back_typed(directory: Path) -> None:
    refusing = FakePredictor(fail_with=PredictError(FailureKind.INVALID_FEATURES, "bad rows"))
    server = await _server(directory, refusing)
    sockets = await _client(directory, FakePredictor())
    try:
        assert await sockets.dispatch(_batch(1)) == PredictError(
            FailureKind.INVALID_FEATURES, "bad rows"
        )
    finally:
        await sockets.stop()
        await server.stop()


async def test_an_exception_in_the_replica_comes_back_as_a_typed_error(directory: Path) -> None:
    async def raising(batch: PredictBatch) -> BatchResult | PredictError:
        raise RuntimeError("torch said no")

    server = SocketServer(directory / "r1.sock", raising)
    await server.start()
    sockets = await _client(directory, FakePredictor())
    try:
        # what the handle path returns for it (model.common.protocol.as_predict_error)
        assert await sockets.dispatch(_batch(1)) == PredictError(
            FailureKind.UNAVAILABLE, "RuntimeError"
        )
        assert sockets.view()["connected"] == ["r1.sock"]  # the connection stays up
    finally:
        await sockets.stop()
        await server.stop()


async def test_no_socket_means_the_handle(directory: Path) -> None:
    handle = FakePredictor()
    sockets = await _client(directory, handle)  # the directory does not even exist
    seen: list[str] = []
    sockets.on_call = seen.append
    answer = await sockets.dispatch(_batch(2))
    assert seen == ["handle"]
    assert isinstance(answer, BatchResult)
    assert len(handle.calls) == 1
    assert sockets.view()["calls"] == {"socket": 0, "handle": 1}
    off = PredictorSockets(None, handle.dispatch)
    off.start()  # no directory: nothing to scan
    assert isinstance(await off.dispatch(_batch(1)), BatchResult)
    assert len(handle.calls) == 2
    await off.stop()


async def test_a_stale_socket_file_is_skipped_for_the_handle(directory: Path) -> None:
    directory.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(directory / "dead.sock"))  # bound, never listening: a killed replica's
    stale.close()
    handle = FakePredictor()
    sockets = await _client(directory, handle)
    assert sockets.view()["connected"] == []
    assert isinstance(await sockets.dispatch(_batch(1)), BatchResult)
    assert len(handle.calls) == 1
    await sockets.stop()


async def test_a_stopping_replica_answers_what_it_read_then_the_handle_takes_over(
    directory: Path,
) -> None:
    gate = asyncio.Event()
    replica, handle = FakePredictor(gate=gate), FakePredictor()
    server = await _server(directory, replica)
    sockets = await _client(directory, handle)
    try:
        in_flight = asyncio.ensure_future(sockets.dispatch(_batch(2)))
        await asyncio.sleep(0.05)
        assert len(replica.calls) == 1
        assert server.in_flight == 1
        stopping = asyncio.ensure_future(server.stop(drain_s=5.0))
        await asyncio.sleep(0.05)
        assert not (directory / "r1.sock").exists()  # no gateway connects again
        assert not in_flight.done()  # still being answered
        # The goodbye arrived: a new batch goes through the handle, not to the replica.
        assert sockets.view()["connected"] == []
        assert isinstance(await sockets.dispatch(_batch(1)), BatchResult)
        assert len(handle.calls) == 1
        assert len(replica.calls) == 1
        gate.set()
        assert isinstance(await in_flight, BatchResult)
        await stopping
        await asyncio.sleep(0.05)  # the client reads the close
        await sockets.scan()
        assert sockets.view()["connected"] == []
        assert sockets.view()["broken_connections"] == 0  # a drained close is no breakage
    finally:
        await sockets.stop()


async def test_a_replica_that_dies_mid_call_fails_the_call_for_a_retry(directory: Path) -> None:
    gate = asyncio.Event()  # never set: the replica never answers
    replica, handle = FakePredictor(gate=gate), FakePredictor()
    server = await _server(directory, replica)
    sockets = await _client(directory, handle)
    try:
        call = asyncio.ensure_future(sockets.dispatch(_batch(2)))
        await asyncio.sleep(0.05)
        for conn in list(server._connections):  # the process is gone: its end just closes
            assert conn._transport is not None
            conn._transport.abort()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(call, 2.0)
        assert sockets.view()["broken_connections"] == 1
        # The retry (app.gateway.delivery sends one) finds no socket and takes the handle.
        assert isinstance(await sockets.dispatch(_batch(1)), BatchResult)
        assert len(handle.calls) == 1
    finally:
        await sockets.stop()
        await server.stop(drain_s=0.1)


async def test_a_frame_the_server_cannot_read_drops_only_that_connection(
    directory: Path,
) -> None:
    server = await _server(directory, FakePredictor())
    reader, writer = await asyncio.open_unix_connection(str(directory / "r1.sock"))
    writer.write(b"\xff\xff\xff\xff")  # a length no frame has
    assert await asyncio.wait_for(reader.read(), 2.0) == b""  # closed on it
    assert server.dropped == 1
    sockets = await _client(directory, FakePredictor())
    try:
        assert isinstance(await sockets.dispatch(_batch(1)), BatchResult)
        assert server.calls == 1
    finally:
        await sockets.stop()
        await server.stop()


async def test_calls_spread_over_replicas_by_what_each_has_waiting(directory: Path) -> None:
    gate = asyncio.Event()
    busy, idle = FakePredictor(gate=gate), FakePredictor()
    servers = [await _server(directory, busy, "a"), await _server(directory, idle, "b")]
    sockets = await _client(directory, FakePredictor())
    try:
        first = asyncio.ensure_future(sockets.dispatch(_batch(1)))  # to "a" (sorted first)
        await asyncio.sleep(0.05)
        assert len(busy.calls) == 1
        for _ in range(3):  # "a" has one waiting, so these go to "b"
            assert isinstance(await sockets.dispatch(_batch(1)), BatchResult)
        assert len(idle.calls) == 3
        assert len(busy.calls) == 1
        gate.set()
        assert isinstance(await first, BatchResult)
    finally:
        await sockets.stop()
        for server in servers:
            await server.stop()


async def test_the_client_finds_a_replica_that_starts_later(directory: Path) -> None:
    handle, replica = FakePredictor(), FakePredictor()
    sockets = PredictorSockets(directory, handle.dispatch, scan_s=0.05)
    sockets.start()
    try:
        await sockets.dispatch(_batch(1))
        assert len(handle.calls) == 1
        server = await _server(directory, replica)
        await asyncio.sleep(0.2)  # a few scans
        await sockets.dispatch(_batch(1))
        assert len(replica.calls) == 1
        assert len(handle.calls) == 1
        await server.stop()
    finally:
        await sockets.stop()
