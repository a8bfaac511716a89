"""The predictor's same-node socket, on the wire: one frame per call and per answer.

What a gateway sends a predictor replica on its own node (:mod:`model.socket_server`,
:mod:`app.gateway.predictor_socket`) is what it would send through the deployment handle,
a :class:`PredictBatch`, and what comes back is a :class:`BatchResult` or
:class:`PredictError`. No pickle: a frame is

    u32 length of the rest | u32 length of the JSON header | JSON header | array bytes

with the array as little-endian float32 in C order (the shape is in the header). A call's
header carries an id, so several calls share one connection and answers may come back in
any order. Pure Python and numpy: the gateway imports it.
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from model.common.failures import FailureKind
from model.common.protocol import BatchResult, PredictBatch, PredictError
from model.common.refs import ModelRef

_LENGTHS = struct.Struct("<II")
_PREFIX = struct.Struct("<I")
PREFIX_BYTES = _PREFIX.size
# Far above any real call (32 rows of a 64-bar window are ~100 KB); a longer frame means
# a peer that does not speak this protocol, and the connection is dropped.
MAX_FRAME_BYTES = 64 << 20
_DTYPE = np.dtype("<f4")


def socket_directory(node_id: str, app_name: str, base: Path | None = None) -> Path:
    """Where an application's predictor replicas on one Ray node put their sockets.

    The node id makes it the node's (a directory from an earlier cluster, or another
    raylet on the same machine, never matches); the application's name is hashed so the
    path stays inside the ~100 bytes a Unix socket's path may have.
    """
    app = hashlib.sha256(app_name.encode()).hexdigest()[:12]
    root = base if base is not None else Path(tempfile.gettempdir()) / "cnnlstm-sockets"
    return root / f"{node_id[:16]}-{app}"


class WireError(ValueError):
    """A frame that does not decode: the connection carrying it is dropped."""


def _frame(header: dict[str, Any], array: np.ndarray) -> bytes:
    head = orjson.dumps(header)
    body = np.ascontiguousarray(array, dtype=_DTYPE).tobytes()
    return _LENGTHS.pack(4 + len(head) + len(body), len(head)) + head + body


def frame_length(prefix: bytes) -> int:
    """The length of the frame whose first :data:`PREFIX_BYTES` bytes are ``prefix``."""
    (length,) = _PREFIX.unpack(prefix)
    if not 4 <= length <= MAX_FRAME_BYTES:
        raise WireError(f"frame of {length} bytes")
    return int(length)


class Frames:
    """The bytes read off one connection, cut into whole frames as they complete.

    For an :class:`asyncio.Protocol`: ``data_received`` hands each chunk to :meth:`feed`
    and handles the frames it returns there and then, with no reader task to wake.
    """

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The frames (without their length prefixes) that ``data`` completes, in order;
        :class:`WireError` for a length no peer of this protocol sends."""
        self._data += data
        frames: list[bytes] = []
        while len(self._data) >= PREFIX_BYTES:
            end = PREFIX_BYTES + frame_length(bytes(self._data[:PREFIX_BYTES]))
            if len(self._data) < end:
                break
            with memoryview(self._data) as view:
                frames.append(view[PREFIX_BYTES:end].tobytes())
            del self._data[:end]
        return frames


def _split(payload: bytes) -> tuple[dict[str, Any], np.ndarray]:
    try:
        (head_len,) = _PREFIX.unpack_from(payload)
        header = orjson.loads(memoryview(payload)[4 : 4 + head_len])
        shape = tuple(int(n) for n in header["shape"])
        array = np.frombuffer(payload, dtype=_DTYPE, offset=4 + head_len).reshape(shape)
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise WireError(f"undecodable frame: {type(exc).__name__}") from exc
    if not isinstance(header, dict):
        raise WireError("frame header is not an object")
    return header, array


def encode_call(call_id: int, batch: PredictBatch) -> bytes:
    header = {
        "id": call_id,
        "ref": batch.ref.to_json(),
        "shape": list(batch.features.shape),
        "request_ids": list(batch.request_ids),
    }
    if batch.warm:
        header["warm"] = True
    return _frame(header, batch.features)


def decode_call(payload: bytes) -> tuple[int, PredictBatch]:
    """A call frame (without its length prefix) as its id and batch."""
    header, features = _split(payload)
    try:
        ref = ModelRef(**header["ref"])
        return int(header["id"]), PredictBatch(
            ref=ref,
            features=features,
            request_ids=tuple(header["request_ids"]),
            warm=header.get("warm") is True,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"undecodable call: {type(exc).__name__}") from exc


# The id of a frame that answers no call: the replica is stopping. Its gateways send it
# nothing more; it answers what it has read, then closes the connection.
GOODBYE_ID = -1
GOODBYE = PredictError(FailureKind.NOT_READY, "the predictor replica is stopping")


def encode_goodbye() -> bytes:
    return encode_answer(GOODBYE_ID, GOODBYE)


def encode_answer(call_id: int, answer: BatchResult | PredictError) -> bytes:
    if isinstance(answer, PredictError):
        header: dict[str, Any] = {
            "id": call_id,
            "error": answer.kind.value,
            "message": answer.message,
            "shape": [0],
        }
        return _frame(header, np.empty(0, dtype=_DTYPE))
    header = {
        "id": call_id,
        "ref": answer.ref.to_json(),
        "shape": list(answer.outputs.shape),
        "forward_rows": answer.forward_rows,
        "model_ms": answer.model_ms,
        "horizon_bars": answer.horizon_bars,
        "predictor_wait_ms": answer.predictor_wait_ms,
        "replica": answer.replica,
    }
    return _frame(header, answer.outputs)


def decode_answer(payload: bytes) -> tuple[int, BatchResult | PredictError]:
    """An answer frame (without its length prefix) as its call id and answer
    (:data:`GOODBYE_ID` and :data:`GOODBYE` for a stopping replica's last word)."""
    header, outputs = _split(payload)
    try:
        call_id = int(header["id"])
        if "error" in header:
            return call_id, PredictError(FailureKind(header["error"]), str(header["message"]))
        return call_id, BatchResult(
            ref=ModelRef(**header["ref"]),
            outputs=outputs,
            forward_rows=int(header["forward_rows"]),
            model_ms=float(header["model_ms"]),
            horizon_bars=int(header["horizon_bars"]),
            predictor_wait_ms=float(header["predictor_wait_ms"]),
            replica=str(header["replica"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"undecodable answer: {type(exc).__name__}") from exc
