"""A real uvicorn HTTPS server (background thread) serving the security harness app.

One server for the whole ``tests/api`` package: dev certificates from
``certs-dev/make-dev-certs.sh``, a config with every security file in a temp dir, logs
(stdlib and structlog) going to one file there. Package- rather than session-scoped: the
harness re-routes global logging while it runs, and must hand it back before other
packages' tests (which configure logging themselves) start.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import structlog
import uvicorn

from app.security.dev_certs import ensure_dev_certs
from tests.support.live import LiveTarget
from tests.support.security_app import build_security_test_app, write_security_material

_LOGGERS = ("app", "uvicorn", "uvicorn.access", "uvicorn.error")


@contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """Route stdlib and structlog records into ``path`` for the duration."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    saved_levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    saved_structlog = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**saved_structlog)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        root.removeHandler(handler)
        handler.close()


@contextmanager
def _serve_in_thread(server: uvicorn.Server, sock: socket.socket) -> Iterator[None]:
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the uvicorn harness did not start")
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="package")
def live_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveTarget]:
    root = tmp_path_factory.mktemp("security-live")
    certs = ensure_dev_certs(root / "certs")
    material = write_security_material(root, cert=certs.cert, key=certs.key)
    log_dir = root / "logs"
    log_dir.mkdir()
    with _logging_to(log_dir / "server.log"):
        app = build_security_test_app(material.config)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        tls = material.config.network_security.tls
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                ssl_certfile=str(tls.cert_path),
                ssl_keyfile=str(tls.key_path),
                log_config=None,  # keep our handlers: records reach the log file
                access_log=True,
                ws="none",
                lifespan="off",
            )
        )
        with _serve_in_thread(server, sock):
            yield LiveTarget(
                base_url=f"https://127.0.0.1:{port}",
                ca_file=certs.ca,
                config=material.config,
                log_paths=[log_dir],
                rsa_private_key_path=material.rsa_private_key_path,
                echo_headers_path="/echo-headers",
                log_flush_s=0.1,
            )
