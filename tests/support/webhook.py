"""A real HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it (the alert
webhook's stand-in: Alertmanager-style receivers just take a POST)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class WebhookReceiver:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)

    def alertnames(self) -> list[str]:
        return [str(p.get("groupLabels", {}).get("alertname")) for p in self.received]


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received.append(json.loads(self.rfile.read(length) or b"{}"))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield WebhookReceiver(url=f"http://127.0.0.1:{port}/alerts", received=received)
    finally:
        server.shutdown()
        server.server_close()
