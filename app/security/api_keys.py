"""API keys: format, digest-only storage, and a hot-path check that costs microseconds.

A key looks like ``cnl_<key id: 12 hex>_<secret: 43 url-safe base64 chars>``; the secret is
256 random bits. The store file (JSON, mode 0600) keeps only the SHA-256 of each whole key
plus its metadata, never the key. 256-bit random keys need no slow hash: one SHA-256 and
``hmac.compare_digest`` per request (see DESIGN 5). Lookups go by the visible key id, so
the comparison is against one stored digest; an unknown id is compared against a dummy
digest so that every well-formed key takes the same path.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from app.security.secret_files import (
    FileChangeProbe,
    exclusive_edit,
    fingerprint,
    read_json_store,
    write_json_store,
)

log = structlog.get_logger("app.security.api_keys")

KEY_PREFIX = "cnl_"
KEY_ID_LENGTH = 12
SECRET_BYTES = 32
SECRET_LENGTH = 43  # len(base64url(32 bytes)) without padding
API_KEY_LENGTH = len(KEY_PREFIX) + KEY_ID_LENGTH + 1 + SECRET_LENGTH
STORE_VERSION = 1

_KEY_RE = re.compile(r"cnl_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
_KEY_ID_RE = re.compile(r"[0-9a-f]{12}")
_SCOPE_RE = re.compile(r"[A-Za-z0-9:._/-]{1,64}")
_DUMMY_DIGEST = hashlib.sha256(b"no such key").digest()


class ApiKeyStoreError(RuntimeError):
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


def validate_scopes(scopes: list[str] | frozenset[str]) -> frozenset[str]:
    if not scopes:
        raise ApiKeyStoreError("at least one scope is required")
    for scope in scopes:
        if not _SCOPE_RE.fullmatch(scope):
            raise ApiKeyStoreError(f"invalid scope name: {scope!r}")
    return frozenset(scopes)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    return datetime.fromisoformat(str(value)).timestamp()


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One stored key: everything but the secret (``sha256`` is the digest of the key)."""

    key_id: str
    sha256: bytes
    owner: str
    scopes: frozenset[str]
    created_at: float
    expires_at: float | None = None
    disabled: bool = False
    rate_limit_per_s: float | None = None
    burst: int | None = None
    priority: int = 0

    def is_active(self, now: float) -> bool:
        return not self.disabled and (self.expires_at is None or now < self.expires_at)

    def public_view(self) -> dict[str, Any]:
        """What ``apikey list`` shows: metadata only, neither key nor digest."""
        return {
            "key_id": self.key_id,
            "owner": self.owner,
            "scopes": sorted(self.scopes),
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "disabled": self.disabled,
            "rate_limit_per_s": self.rate_limit_per_s,
            "burst": self.burst,
            "priority": self.priority,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.public_view(), "sha256": self.sha256.hex()}

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> ApiKeyRecord:
        key_id = str(item["key_id"])
        digest = bytes.fromhex(str(item["sha256"]))
        if not _KEY_ID_RE.fullmatch(key_id) or len(digest) != hashlib.sha256().digest_size:
            raise ValueError("malformed key record")
        rate = item.get("rate_limit_per_s")
        burst = item.get("burst")
        return cls(
            key_id=key_id,
            sha256=digest,
            owner=str(item["owner"]),
            scopes=frozenset(str(s) for s in item["scopes"]),
            created_at=_epoch(item["created_at"]) or 0.0,
            expires_at=_epoch(item.get("expires_at")),
            disabled=bool(item.get("disabled", False)),
            rate_limit_per_s=None if rate is None else float(rate),
            burst=None if burst is None else int(burst),
            priority=int(item.get("priority", 0)),
        )


def _read_records(path: Path) -> dict[str, ApiKeyRecord]:
    try:
        items = read_json_store(path, version=STORE_VERSION, list_key="keys")
        records = [ApiKeyRecord.from_json(item) for item in items or []]
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiKeyStoreError(f"API key store {path} is malformed: {exc}") from None
    return {r.key_id: r for r in records}


def _write_records(path: Path, records: dict[str, ApiKeyRecord]) -> None:
    items = [r.to_json() for r in records.values()]
    write_json_store(path, version=STORE_VERSION, list_key="keys", items=items)


class ApiKeyStore:
    """The key store file, cached in memory and re-read when the file changes."""

    def __init__(self, path: Path, *, reload_interval_s: float = 1.0) -> None:
        self.path = path
        self._probe = FileChangeProbe(path, reload_interval_s)
        self._by_id: dict[str, ApiKeyRecord] = {}
        self._reload(initial=True)

    def __len__(self) -> int:
        return len(self._by_id)

    # --- hot path --------------------------------------------------------------------

    def check(self, raw_key: str, now: float | None = None) -> tuple[ApiKeyRecord | None, str]:
        """``(record, "ok")`` for a valid key, else ``(None, reason)`` for the server log."""
        if self._probe.changed():
            self._reload(initial=False)
        key_id = parse_key_id(raw_key)
        if key_id is None:
            return None, "malformed"
        record = self._by_id.get(key_id)
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

    def _reload(self, *, initial: bool) -> None:
        seen = fingerprint(self.path)
        try:
            records = _read_records(self.path)
        except (OSError, ApiKeyStoreError) as exc:
            # Keep serving the last good version; a broken edit must not lock everyone out.
            log.error("api_key_store_reload_failed", path=str(self.path), error=str(exc))
        else:
            self._by_id = records
            if not initial:  # the first load is reported by whoever built the store
                log.info("api_key_store_reloaded", path=str(self.path), keys=len(records))
        self._probe.mark_seen(seen)

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
        if not owner.strip():
            raise ApiKeyStoreError("owner must not be empty")
        if rate_limit_per_s is not None and rate_limit_per_s <= 0:
            raise ApiKeyStoreError("rate_limit_per_s must be positive")
        if burst is not None and burst < 1:
            raise ApiKeyStoreError("burst must be at least 1")
        key_id, plaintext = generate_api_key()
        record = ApiKeyRecord(
            key_id=key_id,
            sha256=key_digest(plaintext),
            owner=owner.strip(),
            scopes=validate_scopes(scopes),
            # Through the file's ISO form, so the returned record equals the stored one.
            created_at=_epoch(_iso(time.time() if now is None else now)) or 0.0,
            expires_at=_epoch(_iso(expires_at)),
            disabled=disabled,
            rate_limit_per_s=rate_limit_per_s,
            burst=burst,
            priority=priority,
        )
        with exclusive_edit(self.path):
            records = _read_records(self.path)
            records[key_id] = record
            _write_records(self.path, records)
        return record, plaintext

    def list_keys(self) -> list[ApiKeyRecord]:
        return sorted(_read_records(self.path).values(), key=lambda r: r.created_at)

    def revoke(self, key_id: str) -> bool:
        """Disable a key (kept for audit); ``False`` when there is no such key."""
        with exclusive_edit(self.path):
            records = _read_records(self.path)
            if key_id not in records:
                return False
            records[key_id] = replace(records[key_id], disabled=True)
            _write_records(self.path, records)
        return True

    def delete(self, key_id: str) -> bool:
        with exclusive_edit(self.path):
            records = _read_records(self.path)
            if records.pop(key_id, None) is None:
                return False
            _write_records(self.path, records)
        return True
