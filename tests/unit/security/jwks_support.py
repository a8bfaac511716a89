"""A real JWKS endpoint for the JWKS tests: http.server on 127.0.0.1 in a thread, counting
its requests, plus real RSA/EC keys (cryptography) and tokens signed by PyJWT."""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISS = "https://idp.test"
AUD = "cnnlstm-api"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class JwksServer:
    """Serves ``document`` (or ``status``/``redirect_to``) and records every request path."""

    def __init__(self, path: str = "/.well-known/jwks.json") -> None:
        self.path = path
        self.document = b'{"keys": []}'
        self.status = 200
        self.delay_s = 0.0
        self.redirect_to: str | None = None
        self.requests: list[str] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self._stopped = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{self.path}"

    @property
    def fetches(self) -> int:
        return len(self.requests)

    def publish(self, *jwks: dict[str, Any]) -> None:
        self.document = json.dumps({"keys": list(jwks)}).encode()

    def stop(self) -> None:
        """Endpoint down: the port stops accepting connections."""
        if not self._stopped:
            self._stopped = True
            self._httpd.shutdown()
            self._httpd.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if server.delay_s:
                    time.sleep(server.delay_s)
                if server.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.document if server.status == 200 else b"{}"
                self.send_response(server.status)
                self.send_header("Content-Type", "application/jwk-set+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class Clock:
    """An injectable monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64u_int(value: int, length: int | None = None) -> str:
    return _b64u(value.to_bytes(length or (value.bit_length() + 7) // 8, "big"))


@functools.cache
def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """One RSA key per name and size per test process (generation is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key(name: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(private: PrivateKey, kid: str, /, **extra: Any) -> dict[str, Any]:
    """The public JWK of ``private`` with ``use: sig`` and its algorithm; ``extra``
    overrides or adds members (``None`` removes one)."""
    if isinstance(private, rsa.RSAPrivateKey):
        rsa_numbers = private.public_key().public_numbers()
        jwk: dict[str, Any] = {
            "kty": "RSA",
            "n": _b64u_int(rsa_numbers.n),
            "e": _b64u_int(rsa_numbers.e),
            "alg": "RS256",
        }
    else:
        ec_numbers = private.public_key().public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64u_int(ec_numbers.x, 32),
            "y": _b64u_int(ec_numbers.y, 32),
            "alg": "ES256",
        }
    jwk.update(kid=kid, use="sig")
    for name, value in extra.items():
        if value is None:
            jwk.pop(name, None)
        else:
            jwk[name] = value
    return jwk


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "idp-client",
        "scope": "model:stats",
        "iat": now,
        "exp": now + 300,
        "iss": ISS,
        "aud": AUD,
    }
    for name, value in overrides.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def sign(
    private: PrivateKey,
    kid: str | None,
    *,
    alg: str | None = None,
    headers: dict[str, Any] | None = None,
    **claim_overrides: Any,
) -> str:
    """A token signed by ``private`` (RS256 for RSA, ES256 for EC unless ``alg`` says)."""
    alg = alg or ("RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256")
    header = dict(headers or {})
    if kid is not None:
        header["kid"] = kid
    return pyjwt.encode(claims(**claim_overrides), private, algorithm=alg, headers=header)
