"""API keys: format, digest-only storage, and a hot-path check that costs microseconds.

A key looks like ``cnl_<key id: 12 hex>_<secret: 43 url-safe base64 chars>``; the secret is
256 random bits. The store file (JSON, mode 0600, see :mod:`app.security.record_store`)
keeps only the SHA-256 of each whole key plus its metadata, never the key. A 256-bit random
key cannot be brute-forced from its digest, so it needs no slow password hash (one per
request would blow the latency budget): one SHA-256 and ``hmac.compare_digest`` per
request. Lookups go by the visible key id, so the comparison is against one stored digest;
an unknown id is compared against a dummy digest so that every well-formed key takes the
same path.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import structlog

from app.security.record_store import (
    RecordStore,
    RecordStoreError,
    StoredRecord,
    epoch_time,
    iso_time,
)

log = structlog.get_logger("app.security.api_keys")

KEY_PREFIX = "cnl_"
KEY_ID_LENGTH = 12
SECRET_BYTES = 32
SECRET_LENGTH = 43  # len(base64url(32 bytes)) without padding
API_KEY_LENGTH = len(KEY_PREFIX) + KEY_ID_LENGTH + 1 + SECRET_LENGTH

_KEY_RE = re.compile(r"cnl_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
_KEY_ID_RE = re.compile(r"[0-9a-f]{12}")
_DUMMY_DIGEST = hashlib.sha256(b"no such key").digest()


class ApiKeyStoreError(RecordStoreError):
    """The store file cannot be read or an edit is invalid (never carries a secret)."""


def generate_api_key() -> tuple[str, str]:
    """Return ``(key_id, plaintext_key)``; the plaintext must be shown once, then dropped."""
    key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def parse_key_id(raw_key: str) -> str | None:
    """The key id of a well-formed key, else ``None`` (no secret is ever returned)."""
    if len(raw_key) != API_KEY_LENGTH:
        return None
    match = _KEY_RE.fullmatch(raw_key)
    return match.group(1) if match else None


def key_digest(raw_key: str) -> bytes:
    return hashlib.sha256(raw_key.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class ApiKeyRecord(StoredRecord):
    """One stored key: everything but the secret (``sha256`` is the digest of the key)."""

    id_field = "key_id"

    key_id: str
    sha256: bytes
    expires_at: float | None = None
    rate_limit_per_s: float | None = None
    burst: int | None = None
    priority: int = 0

    def is_active(self, now: float) -> bool:
        return not self.disabled and (self.expires_at is None or now < self.expires_at)

    def _extra_view(self) -> dict[str, Any]:
        return {
            "expires_at": iso_time(self.expires_at),
            "rate_limit_per_s": self.rate_limit_per_s,
            "burst": self.burst,
            "priority": self.priority,
        }

    def _digest_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256.hex()}

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> ApiKeyRecord:
        key_id = str(item["key_id"])
        digest = bytes.fromhex(str(item["sha256"]))
        if not _KEY_ID_RE.fullmatch(key_id) or len(digest) != hashlib.sha256().digest_size:
            raise ValueError("malformed key record")
        rate = None if item.get("rate_limit_per_s") is None else float(item["rate_limit_per_s"])
        burst = None if item.get("burst") is None else int(item["burst"])
        # A hand edit the CLI would refuse: a bucket cannot hold it (every request with the
        # key would fail), and 0 would read as "no limit of its own".
        if (rate is not None and not rate > 0) or (burst is not None and burst < 1):
            raise ValueError(f"key {key_id}: rate_limit_per_s must be > 0 and burst >= 1")
        return cls(
            key_id=key_id,
            sha256=digest,
            **cls.common_fields(item),
            expires_at=epoch_time(item.get("expires_at")),
            rate_limit_per_s=rate,
            burst=burst,
            priority=int(item.get("priority", 0)),
        )


class ApiKeyStore(RecordStore[ApiKeyRecord]):
    """The key store file, cached in memory and re-read when the file changes."""

    record_type = ApiKeyRecord
    list_key = "keys"
    label = "API key store"
    event_prefix = "api_key_store"
    error = ApiKeyStoreError
    log = log

    # --- hot path --------------------------------------------------------------------

    def check(self, raw_key: str, now: float | None = None) -> tuple[ApiKeyRecord | None, str]:
        """``(record, "ok")`` for a valid key, else ``(None, reason)`` for the server log."""
        by_id = self._current()
        key_id = parse_key_id(raw_key)
        if key_id is None:
            return None, "malformed"
        record = by_id.get(key_id)
        # Same work whether or not the id exists: hash, then one constant-time compare.
        matched = hmac.compare_digest(
            key_digest(raw_key), record.sha256 if record is not None else _DUMMY_DIGEST
        )
        if record is None:
            return None, "unknown"
        if not matched:
            return None, "mismatch"
        if record.disabled:
            return None, "disabled"
        if not record.is_active(time.time() if now is None else now):
            return None, "expired"
        return record, "ok"

    def verify(self, raw_key: str, now: float | None = None) -> ApiKeyRecord | None:
        return self.check(raw_key, now)[0]

    # --- administration (CLI) --------------------------------------------------------

    def create(
        self,
        *,
        owner: str,
        scopes: list[str] | frozenset[str],
        expires_at: float | None = None,
        rate_limit_per_s: float | None = None,
        burst: int | None = None,
        priority: int = 0,
        disabled: bool = False,
        now: float | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """Add a key; returns its record and the plaintext key (the only time it exists)."""
        owner, allowed = self._checked_owner_and_scopes(owner, scopes)
        if rate_limit_per_s is not None and rate_limit_per_s <= 0:
            raise ApiKeyStoreError("rate_limit_per_s must be positive")
        if burst is not None and burst < 1:
            raise ApiKeyStoreError("burst must be at least 1")
        key_id, plaintext = generate_api_key()
        record = ApiKeyRecord(
            key_id=key_id,
            sha256=key_digest(plaintext),
            owner=owner,
            scopes=allowed,
            # Through the file's ISO form, so the returned record equals the stored one.
            created_at=epoch_time(iso_time(time.time() if now is None else now)) or 0.0,
            expires_at=epoch_time(iso_time(expires_at)),
            disabled=disabled,
            rate_limit_per_s=rate_limit_per_s,
            burst=burst,
            priority=priority,
        )
        self._add(record)
        return record, plaintext

    def list_keys(self) -> list[ApiKeyRecord]:
        return self.records()
