"""Just enough HTTP/1.1 for the sender: pre-encoded requests, responses parsed by length.

The sender needs status, body and whether the server closes; nothing else of a response
is read, so parsing stays a few byte searches per reply.
"""

from __future__ import annotations


def encode_requests(host: str, path: str, bodies: list[bytes], api_key: str | None) -> list[bytes]:
    """Complete HTTP/1.1 requests (head and body), built once before the clock starts."""
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    if api_key:
        head += f"X-API-Key: {api_key}\r\n"
    return [(head + f"Content-Length: {len(b)}\r\n\r\n").encode("latin-1") + b for b in bodies]


def parse_response(buf: bytearray | bytes) -> tuple[int, bytes, int, bool] | None:
    """``(status, body, bytes consumed, close)`` once a whole response is in ``buf``.

    Content-Length and chunked bodies; a response with neither is read to EOF by the
    caller (``close`` is then True and this returns None until the connection ends).
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    close = b"\r\nconnection: close" in head
    start = end + 4
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        if len(buf) - start < length:
            return None
        return status, bytes(buf[start : start + length]), start + length, close
    if b"\r\ntransfer-encoding: chunked" in head:
        return _chunked(buf, start, status, close)
    if status in (204, 304) or status < 200:
        return status, b"", start, close
    return None


def _chunked(
    buf: bytearray | bytes, pos: int, status: int, close: bool
) -> tuple[int, bytes, int, bool] | None:
    body = bytearray()
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
        pos = line_end + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", pos - 2)
            if trailer_end < 0:
                return None
            return status, bytes(body), trailer_end + 4, close
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        pos += size + 2


def ended_by_close(buf: bytearray | bytes) -> tuple[int, bytes] | None:
    """``(status, body)`` of a response that the connection's end completes: one with
    neither Content-Length nor chunks. None otherwise: a framed response still short of
    its length when the connection ends was cut off, which is an error, not an answer."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    if b"\r\ncontent-length:" in head or b"\r\ntransfer-encoding:" in head:
        return None
    return int(head[9:12]), bytes(buf[end + 4 :])
