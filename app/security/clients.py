"""OAuth2 client-credentials clients: id, hashed secret, allowed scopes.

Client secrets are checked only at ``POST /token`` (not per request), so they get a
deliberately slow salted hash: passlib's ``pbkdf2_sha256``. Not bcrypt: passlib 1.7.4
breaks with bcrypt >= 4.1 (and bcrypt 5 fails passlib's backend self-test). An unknown
client id is checked against a dummy hash so the time taken does not say whether the id
exists. Callers on an event loop must run :meth:`ClientStore.authenticate` in a worker
thread. The file itself is a :class:`~app.security.record_store.RecordStore`, like the API
key store.
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import structlog
from passlib.context import CryptContext

from app.security.record_store import RecordStore, RecordStoreError, StoredRecord

log = structlog.get_logger("app.security.clients")

CLIENT_ID_PREFIX = "cli_"
_CLIENT_ID_RE = re.compile(r"cli_[0-9a-f]{16}")

_hasher = CryptContext(schemes=["pbkdf2_sha256"], deprecated="auto")


@functools.cache
def _dummy_hash() -> str:
    # Made on first use, not at import: a deliberate slow hash has no place in an import.
    return _hasher.hash(secrets.token_urlsafe(32))


class ClientStoreError(RecordStoreError):
    """The client store is unreadable or an edit is invalid (never carries a secret)."""


@dataclass(frozen=True, slots=True)
class ClientRecord(StoredRecord):
    id_field = "client_id"

    client_id: str
    secret_hash: str

    def _digest_json(self) -> dict[str, Any]:
        return {"secret_hash": self.secret_hash}

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> ClientRecord:
        return cls(
            client_id=str(item["client_id"]),
            secret_hash=str(item["secret_hash"]),
            **cls.common_fields(item),
        )


def hash_client_secret(secret: str) -> str:
    return _hasher.hash(secret)


class ClientStore(RecordStore[ClientRecord]):
    """The client file, cached and re-read when it changes."""

    record_type = ClientRecord
    list_key = "clients"
    label = "client store"
    event_prefix = "client_store"
    error = ClientStoreError
    log = log

    def authenticate(self, client_id: str, client_secret: str) -> ClientRecord | None:
        """The active client whose secret matches, else ``None`` (slow: run off-loop)."""
        by_id = self._current()
        record = by_id.get(client_id) if _CLIENT_ID_RE.fullmatch(client_id) else None
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
        owner, allowed = self._checked_owner_and_scopes(owner, scopes)
        secret = secrets.token_urlsafe(32)
        record = ClientRecord(
            client_id=CLIENT_ID_PREFIX + secrets.token_hex(8),
            secret_hash=hash_client_secret(secret),
            owner=owner,
            scopes=allowed,
            created_at=float(int(time.time())),  # whole seconds: survives the ISO round trip
        )
        self._add(record)
        return record, secret

    def list_clients(self) -> list[ClientRecord]:
        return self.records()
