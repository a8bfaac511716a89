"""A running server the security attack suite can talk to, and the keys to reach it.

``LiveTarget`` describes one server started by a fixture (a uvicorn harness, or the real
Ray Serve app): where it listens over HTTPS, which CA signed its certificate, the config
it runs with (so tests can write keys into its key store and sign tokens with its secret)
and where it logs. Every credential a helper creates is remembered in ``secrets_used`` so
the final test can check that none reached a log file.
"""

from __future__ import annotations

import math
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt

from app.config import ServiceConfig
from app.security.api_keys import ApiKeyStore
from app.security.clients import ClientStore
from app.security.jwt_tokens import read_jwt_secret


def columnar_bars(symbol: str = "TEST", n: int = 64) -> dict[str, Any]:
    """A valid predict body in the production shape: columnar OHLCV arrays of ``n`` bars."""
    closes = [100.0 + 2.0 * math.sin(i / 5.0) + 0.05 * i for i in range(n)]
    opens = [closes[0], *closes[:-1]]
    return {
        "symbol": symbol,
        "timestamps": [1_700_000_000 + 3600 * i for i in range(n)],
        "open": [round(o, 4) for o in opens],
        "high": [round(max(o, c) + 0.25, 4) for o, c in zip(opens, closes, strict=True)],
        "low": [round(min(o, c) - 0.25, 4) for o, c in zip(opens, closes, strict=True)],
        "close": [round(c, 4) for c in closes],
        "volume": [1000.0 + 10 * (i % 7) for i in range(n)],
    }


@dataclass
class LiveTarget:
    base_url: str  # e.g. https://127.0.0.1:PORT
    ca_file: Path
    config: ServiceConfig
    log_paths: list[Path]  # files or directories the server logs into
    rsa_private_key_path: Path | None = None  # signs RS256 tokens the server accepts
    predict_body: dict[str, Any] | None = None  # None: columnar_bars()
    echo_headers_path: str | None = None  # a route answering {"headers": [names it saw]}
    reload_wait_s: float = 1.2  # stores are re-read at most once a second
    log_flush_s: float = 0.5  # how long the server may take to write a log line
    secrets_used: list[str] = field(default_factory=list)

    # --- transport -----------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the server certificate (and its name) against the dev CA only."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def raw_request(self, data: bytes, timeout_s: float = 10.0) -> tuple[int, bytes]:
        """Send ``data`` as is over TLS; the response's status and body (one response)."""
        url = httpx.URL(self.base_url)
        host, port = url.host, url.port or 443
        received = b""
        with (
            socket.create_connection((host, port), timeout=timeout_s) as sock,
            self.ssl_context().wrap_socket(sock, server_hostname=host) as tls,
        ):
            tls.sendall(data)
            while b"\r\n\r\n" not in received or len(received) < _response_size(received):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, verify=self.ssl_context(), timeout=15.0, **kwargs
        )

    def valid_predict_body(self) -> dict[str, Any]:
        return self.predict_body if self.predict_body is not None else columnar_bars()

    def remember(self, *values: str) -> None:
        self.secrets_used.extend(v for v in values if v)

    # --- API keys --------------------------------------------------------------------------

    def key_store(self) -> ApiKeyStore:
        return ApiKeyStore(self.config.security.authentication.api_key_store_path)

    def wait_for_reload(self) -> None:
        time.sleep(self.reload_wait_s)

    def create_key(self, scopes: list[str], *, wait: bool = True, **kwargs: Any) -> tuple[str, str]:
        """Write a key into the server's store: ``(key_id, plaintext)``."""
        record, plaintext = self.key_store().create(
            owner=kwargs.pop("owner", "attack-suite"), scopes=scopes, **kwargs
        )
        self.remember(plaintext, plaintext[-43:])  # the key, and its secret part alone
        if wait:
            self.wait_for_reload()
        return record.key_id, plaintext

    def revoke_key(self, key_id: str, *, wait: bool = True) -> None:
        assert self.key_store().revoke(key_id)
        if wait:
            self.wait_for_reload()

    def delete_key(self, key_id: str, *, wait: bool = True) -> None:
        assert self.key_store().delete(key_id)
        if wait:
            self.wait_for_reload()

    # --- JWTs ------------------------------------------------------------------------------

    def jwt_secret(self) -> bytes:
        secret = read_jwt_secret(self.config.security.authentication.jwt_secret_path)
        self.remember(secret.decode())
        return secret

    def public_key_pem(self) -> bytes | None:
        path = self.config.security.authentication.jwt_public_key_path
        return path.read_bytes() if path is not None else None

    def mint(
        self,
        scopes: list[str],
        *,
        ttl_s: int = 300,
        subject: str = "attack-suite",
        algorithm: str = "HS256",
        claims: dict[str, Any] | None = None,
        key: str | bytes | None = None,
    ) -> str:
        """Sign a token the way a legitimate issuer would (PyJWT), then apply ``claims``
        overrides (a value of ``None`` removes that claim)."""
        auth = self.config.security.authentication
        now = int(time.time())
        payload: dict[str, Any] = {
            "sub": subject,
            "scope": " ".join(scopes),
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
        }
        if auth.jwt_issuer is not None:
            payload["iss"] = auth.jwt_issuer
        if auth.jwt_audience is not None:
            payload["aud"] = auth.jwt_audience
        for name, value in (claims or {}).items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        if key is None:
            if algorithm.startswith("HS"):
                key = self.jwt_secret()
            else:
                assert self.rsa_private_key_path is not None, "no private key for RS256"
                key = self.rsa_private_key_path.read_bytes()
                pem_lines = key.decode().splitlines()
                self.remember(key.decode(), max(pem_lines, key=len))
        token = pyjwt.encode(payload, key, algorithm=algorithm)
        self.remember(token, token.rsplit(".", 1)[-1])
        return token

    # --- OAuth2 clients ----------------------------------------------------------------------

    def create_client(self, scopes: list[str], *, wait: bool = True) -> tuple[str, str]:
        path = self.config.security.authentication.client_store_path
        assert path is not None, "the server has no client store"
        record, secret = ClientStore(path).create(owner="attack-suite", scopes=scopes)
        self.remember(secret)
        if wait:
            self.wait_for_reload()
        return record.client_id, secret


def _response_size(received: bytes) -> int:
    """Header bytes plus Content-Length, once the headers are in (else a large number)."""
    head, sep, _ = received.partition(b"\r\n\r\n")
    if not sep:
        return 1 << 30
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value.strip())
    return 1 << 30  # no length: read until the server closes
