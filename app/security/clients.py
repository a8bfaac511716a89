"""OAuth2 client-credentials clients: id, hashed secret, allowed scopes.

Client secrets are checked only at ``POST /token`` (not per request), so they get a
deliberately slow salted hash: passlib's ``pbkdf2_sha256`` (bcrypt is out, see DESIGN 5).
An unknown client id is checked against a dummy hash so the time taken does not say
whether the id exists. Callers on an event loop must run :meth:`ClientStore.authenticate`
in a worker thread.
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from passlib.context import CryptContext

from app.security.api_keys import ApiKeyStoreError, validate_scopes
from app.security.secret_files import (
    FileChangeProbe,
    exclusive_edit,
    fingerprint,
    read_json_store,
    write_json_store,
)

log = structlog.get_logger("app.security.clients")

CLIENT_ID_PREFIX = "cli_"
STORE_VERSION = 1
_CLIENT_ID_RE = re.compile(r"cli_[0-9a-f]{16}")

_hasher = CryptContext(schemes=["pbkdf2_sha256"], deprecated="auto")


@functools.cache
def _dummy_hash() -> str:
    # Made on first use, not at import: a deliberate slow hash has no place in an import.
    return _hasher.hash(secrets.token_urlsafe(32))


class ClientStoreError(RuntimeError):
    """The client store is unreadable or an edit is invalid (never carries a secret)."""


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    secret_hash: str
    owner: str
    scopes: frozenset[str]
    created_at: float
    disabled: bool = False

    def public_view(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "owner": self.owner,
            "scopes": sorted(self.scopes),
            "created_at": datetime.fromtimestamp(self.created_at, UTC).isoformat(),
            "disabled": self.disabled,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.public_view(), "secret_hash": self.secret_hash}

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> ClientRecord:
        return cls(
            client_id=str(item["client_id"]),
            secret_hash=str(item["secret_hash"]),
            owner=str(item["owner"]),
            scopes=frozenset(str(s) for s in item["scopes"]),
            created_at=datetime.fromisoformat(str(item["created_at"])).timestamp(),
            disabled=bool(item.get("disabled", False)),
        )


def hash_client_secret(secret: str) -> str:
    return _hasher.hash(secret)


def _read(path: Path) -> dict[str, ClientRecord]:
    try:
        items = read_json_store(path, version=STORE_VERSION, list_key="clients")
        records = [ClientRecord.from_json(item) for item in items or []]
    except (ValueError, KeyError, TypeError) as exc:
        raise ClientStoreError(f"client store {path} is malformed: {exc}") from None
    return {r.client_id: r for r in records}


def _write(path: Path, records: dict[str, ClientRecord]) -> None:
    items = [r.to_json() for r in records.values()]
    write_json_store(path, version=STORE_VERSION, list_key="clients", items=items)


class ClientStore:
    """The client file, cached and re-read when it changes (like the API key store)."""

    def __init__(self, path: Path, *, reload_interval_s: float = 1.0) -> None:
        self.path = path
        self._probe = FileChangeProbe(path, reload_interval_s)
        self._by_id: dict[str, ClientRecord] = {}
        self._reload()

    def __len__(self) -> int:
        return len(self._by_id)

    def _reload(self) -> None:
        seen = fingerprint(self.path)
        try:
            self._by_id = _read(self.path)
        except (OSError, ClientStoreError) as exc:
            log.error("client_store_reload_failed", path=str(self.path), error=str(exc))
        self._probe.mark_seen(seen)

    def authenticate(self, client_id: str, client_secret: str) -> ClientRecord | None:
        """The active client whose secret matches, else ``None`` (slow: run off-loop)."""
        if self._probe.changed():
            self._reload()
        record = self._by_id.get(client_id) if _CLIENT_ID_RE.fullmatch(client_id) else None
        try:
            ok = _hasher.verify(client_secret, record.secret_hash if record else _dummy_hash())
        except (ValueError, TypeError):
            ok = False
        if record is None or not ok or record.disabled:
            return None
        return record

    # --- administration (CLI) --------------------------------------------------------

    def create(self, *, owner: str, scopes: list[str]) -> tuple[ClientRecord, str]:
        """Add a client; returns its record and the plaintext secret (shown once)."""
        if not owner.strip():
            raise ClientStoreError("owner must not be empty")
        try:
            allowed = validate_scopes(scopes)
        except ApiKeyStoreError as exc:
            raise ClientStoreError(str(exc)) from None
        secret = secrets.token_urlsafe(32)
        record = ClientRecord(
            client_id=CLIENT_ID_PREFIX + secrets.token_hex(8),
            secret_hash=hash_client_secret(secret),
            owner=owner.strip(),
            scopes=allowed,
            created_at=float(int(time.time())),  # whole seconds: survives the ISO round trip
        )
        with exclusive_edit(self.path):
            records = _read(self.path)
            records[record.client_id] = record
            _write(self.path, records)
        return record, secret

    def list_clients(self) -> list[ClientRecord]:
        return sorted(_read(self.path).values(), key=lambda r: r.created_at)

    def revoke(self, client_id: str) -> bool:
        with exclusive_edit(self.path):
            records = _read(self.path)
            if client_id not in records:
                return False
            records[client_id] = replace(records[client_id], disabled=True)
            _write(self.path, records)
        return True
