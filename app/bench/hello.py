"""A bare ASGI "hello" on uvicorn with the service's TLS certificate: the generator's floor.

``cnnlstm bench --calibrate`` offers it the same schedules as the service, so the
latency and generator CPU it shows are what the instrument and the TLS/HTTP stack cost
before any application code runs; ``--find-max`` gives its highest passing rate as the
third column (the service cannot beat a server that does nothing). Run alone::

    python -m app.bench.hello --port 8200 --certfile tls.crt --keyfile tls.key

It answers every request (``/ready`` included) with ``200 {"prob_up": 0.5}`` after
reading the body, so the generator's checks pass unchanged.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from app.bench.server_process import KEEP_ALIVE_S, ServerProcess

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

BODY = b'{"status":"ok","prob_up":0.5}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = bool(message.get("more_body"))
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def launch(
    *, port: int, certfile: Path | None, keyfile: Path | None, host: str = "127.0.0.1"
) -> ServerProcess:
    """Start ``python -m app.bench.hello`` (poll ``/ready`` yourself)."""
    argv = [sys.executable, "-m", "app.bench.hello", "--host", host, "--port", str(port)]
    if certfile is not None and keyfile is not None:
        argv += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    if proc.poll() is not None:
        raise RuntimeError(f"the hello server exited at once (code {proc.returncode})")
    scheme = "https" if certfile is not None else "http"
    return ServerProcess(proc, f"{scheme}://{host}:{port}", stop_timeout_s=10.0)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--certfile", type=Path, default=None)
    parser.add_argument("--keyfile", type=Path, default=None)
    args = parser.parse_args(argv)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        ssl_certfile=str(args.certfile) if args.certfile else None,
        ssl_keyfile=str(args.keyfile) if args.keyfile else None,
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        lifespan="on",
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
