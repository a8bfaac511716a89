"""A stand-in app and on-disk security material for the security tests.

``write_security_material`` lays out everything a secured server needs in one directory
(JWT secret, RSA key pair, empty key and client stores) and returns the parsed config;
``build_security_test_app`` serves stand-in ``/predict`` and ``/stats`` routes behind the
real ``install_security`` and dependencies, plus ``/echo-headers`` so tests can see what
reached the app.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Body, Depends, FastAPI, Request

from app.api.errors import register_exception_handlers
from app.api.routes import token
from app.config import ServiceConfig, parse_config
from app.security.dependencies import PredictPrincipal, StatsPrincipal, metrics_access
from app.security.hardening import install_security
from app.security.jwt_tokens import generate_jwt_secret
from app.security.principal import Principal
from app.security.secret_files import atomic_write_private

ISSUER = "https://auth.cnnlstm.test"
AUDIENCE = "cnnlstm-api"
ALLOWED_ORIGIN = "https://trading-platform.com"


@dataclass(frozen=True)
class SecurityMaterial:
    root: Path
    config: ServiceConfig
    jwt_secret: str
    rsa_private_key_path: Path


@functools.cache
def rsa_key_pair() -> tuple[bytes, bytes]:
    """One RSA-2048 pair per test process (PEM private, PEM public): generation is slow."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def write_security_material(
    root: Path,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> SecurityMaterial:
    """Secrets under ``root/secrets`` and a config pointing at them (TLS on iff cert given)."""
    secrets_dir = root / "secrets"
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    jwt_secret = generate_jwt_secret()
    atomic_write_private(secrets_dir / "jwt-secret", (jwt_secret + "\n").encode())
    private_pem, public_pem = rsa_key_pair()
    private_path = secrets_dir / "jwt-private.pem"
    atomic_write_private(private_path, private_pem)
    (secrets_dir / "jwt-public.pem").write_bytes(public_pem)
    raw: dict[str, Any] = {
        "security": {
            "authentication": {
                "api_key_store_path": str(secrets_dir / "api-keys.json"),
                "client_store_path": str(secrets_dir / "clients.json"),
                "jwt_secret_path": str(secrets_dir / "jwt-secret"),
                "jwt_public_key_path": str(secrets_dir / "jwt-public.pem"),
                "jwt_algorithms": ["HS256", "RS256"],
                "jwt_issuer": ISSUER,
                "jwt_audience": AUDIENCE,
                "metrics_auth": "bearer",
            }
        },
        "network_security": {
            "tls": {
                "enabled": cert is not None,
                "cert_path": str(cert or root / "tls.crt"),
                "key_path": str(key or root / "tls.key"),
            },
            "cors": {"allowed_origins": [ALLOWED_ORIGIN]},
            "limits": {"max_body_bytes": 16384},
        },
    }
    config = parse_config(_deep_merge(raw, overrides or {}), source="security test config")
    return SecurityMaterial(root, config, jwt_secret, private_path)


def _describe(principal: Principal) -> dict[str, Any]:
    return {
        "subject": principal.subject,
        "method": principal.method,
        "key_id": principal.key_id,
        "scopes": sorted(principal.scopes),
        "priority": principal.priority,
    }


def build_security_test_app(config: ServiceConfig) -> FastAPI:
    app = FastAPI(title="security harness")
    register_exception_handlers(app)
    install_security(app, config)

    @app.post("/predict")
    async def predict(
        principal: PredictPrincipal, body: Annotated[dict[str, Any], Body()]
    ) -> dict[str, Any]:
        return {"principal": _describe(principal), "fields": sorted(body)}

    @app.get("/stats")
    async def stats(principal: StatsPrincipal) -> dict[str, Any]:
        return {"principal": _describe(principal)}

    @app.get("/metrics", dependencies=[Depends(metrics_access)])
    async def metrics() -> dict[str, str]:
        return {"metrics": "ok"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/echo-headers")
    async def echo_headers(request: Request) -> dict[str, list[str]]:
        return {"headers": sorted(request.headers.keys())}

    app.include_router(token.router)
    return app


MakeMaterial = Callable[..., SecurityMaterial]


def asgi_client(config: ServiceConfig) -> httpx.AsyncClient:
    """An in-process client for the harness app (no sockets, no TLS)."""
    app = build_security_test_app(config)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver")
