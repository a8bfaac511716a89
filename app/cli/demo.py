"""First-run material for a laptop: dev TLS, a JWT secret, a demo key, a demo model.

Everything lands where the configuration says (``deploy/config.local.yaml`` points into
``./.local`` and ``certs-dev/out``, both git-ignored). Existing material is kept, so a
second run serves the same model with the same credentials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from app.config import ServiceConfig
from app.security.api_keys import ApiKeyStore
from app.security.jwt_tokens import generate_jwt_secret, mint_token, read_jwt_secret
from app.security.secret_files import atomic_write_private
from model.common.registry import ModelRegistry

DEMO_KEY_FILE = "demo-api-key"


@dataclass
class DemoMaterial:
    ca_file: Path | None
    api_key: str
    api_key_is_new: bool
    api_key_file: Path
    stats_token: str
    model: str


def _ensure_certs(config: ServiceConfig) -> Path | None:
    tls = config.network_security.tls
    if not tls.enabled:
        return None
    out_dir = tls.cert_path.parent
    if not (tls.cert_path.exists() and tls.key_path.exists()):
        from app.security.dev_certs import ensure_dev_certs

        ensure_dev_certs(out_dir)
    ca = out_dir / "ca.crt"
    return ca if ca.exists() else None


def _ensure_secret(config: ServiceConfig) -> bytes:
    path = config.security.authentication.jwt_secret_path
    if not path.exists():
        atomic_write_private(path, generate_jwt_secret().encode())
    return read_jwt_secret(path)


def _ensure_key(config: ServiceConfig) -> tuple[str, bool, Path]:
    auth = config.security.authentication
    key_file = auth.api_key_store_path.parent / DEMO_KEY_FILE
    store = ApiKeyStore(auth.api_key_store_path)
    if key_file.exists():
        existing = key_file.read_text().strip()
        if store.verify(existing) is not None:
            return existing, False, key_file
    _, plaintext = store.create(owner="demo", scopes=["model:predict"])
    atomic_write_private(key_file, plaintext.encode())
    return plaintext, True, key_file


def _ensure_model(config: ServiceConfig, *, max_seconds: float, log: bool) -> str:
    registry = ModelRegistry(config.model_registry.path)
    name = config.model_registry.default_model
    if name in registry.list_models() and registry.list_versions(name):
        ref = registry.resolve(name)
        return f"{ref.name}/{ref.version}"
    from model.train import train  # torch: only on first run, in this CLI process

    ref = train(
        Path(config.model_registry.path),
        name=name,
        source="eurusd",
        max_seconds=max_seconds,
        progress=(lambda msg: print(f"  train: {msg}", flush=True)) if log else None,
    )
    return f"{ref.name}/{ref.version}"


def prepare_demo(
    config: ServiceConfig, *, train_seconds: float = 60.0, log: bool = True
) -> DemoMaterial:
    for path in (
        config.security.authentication.api_key_store_path.parent,
        Path(config.model_registry.path),
    ):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = _ensure_certs(config)
    secret = _ensure_secret(config)
    key, is_new, key_file = _ensure_key(config)
    model = _ensure_model(config, max_seconds=train_seconds, log=log)
    auth = config.security.authentication
    token = mint_token(
        secret,
        subject=f"demo-operator@{os.uname().nodename}",
        scopes=["model:stats"],
        ttl_s=3600,
        issuer=auth.jwt_issuer,
        audience=auth.jwt_audience,
    )
    return DemoMaterial(ca, key, is_new, key_file, token, model)
