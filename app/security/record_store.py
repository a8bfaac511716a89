"""One store for credential records: a versioned JSON file, cached and hot-reloaded.

The API key store and the OAuth2 client store are both this: a file (mode 0600) holding
``{"version": 1, <list_key>: [record, ...]}`` where each record carries an id, an owner,
scopes, a creation time, a ``disabled`` flag and a *digest* of its secret (never the
secret). Servers keep the records in memory and re-read the file when it changes (at most
one ``stat`` per interval); the CLI edits it under an exclusive lock with atomic writes.
A broken edit keeps the last good version in memory, so it cannot lock everyone out.

What differs per store (the record's own fields, how a secret is checked, how a record is
created) lives in :mod:`app.security.api_keys` and :mod:`app.security.clients`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

from app.security.secret_files import (
    FileChangeProbe,
    exclusive_edit,
    fingerprint,
    read_json_store,
    write_json_store,
)

STORE_VERSION = 1

_SCOPE_RE = re.compile(r"[A-Za-z0-9:._/-]{1,64}")


class RecordStoreError(RuntimeError):
    """A store file cannot be read or an edit is invalid (never carries a secret)."""


def iso_time(ts: float | None) -> str | None:
    """Epoch seconds as the file's UTC ISO-8601 form (``None`` stays ``None``)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def epoch_time(value: Any) -> float | None:
    """The file's ISO-8601 time as epoch seconds (``None`` stays ``None``)."""
    if value is None:
        return None
    return datetime.fromisoformat(str(value)).timestamp()


def validate_scopes(
    scopes: list[str] | frozenset[str], error: type[RecordStoreError] = RecordStoreError
) -> frozenset[str]:
    """At least one scope, each a short name of ``[A-Za-z0-9:._/-]``; raises ``error``."""
    if not scopes:
        raise error("at least one scope is required")
    for scope in scopes:
        if not _SCOPE_RE.fullmatch(scope):
            raise error(f"invalid scope name: {scope!r}")
    return frozenset(scopes)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRecord:
    """The fields every stored credential has; subclasses add their id and secret digest.

    ``id_field`` names the subclass's id attribute (also its key in the file).
    ``public_view`` is what the CLI lists: metadata only, never the secret's digest, which
    only ``to_json`` (the file form) adds.
    """

    id_field: ClassVar[str]

    owner: str
    scopes: frozenset[str]
    created_at: float
    disabled: bool = False

    @property
    def record_id(self) -> str:
        value: str = getattr(self, self.id_field)
        return value

    def public_view(self) -> dict[str, Any]:
        return {
            self.id_field: self.record_id,
            "owner": self.owner,
            "scopes": sorted(self.scopes),
            "created_at": iso_time(self.created_at),
            "disabled": self.disabled,
            **self._extra_view(),
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.public_view(), **self._digest_json()}

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Self:
        """One record from its file item; raises ValueError/KeyError/TypeError if malformed."""
        raise NotImplementedError

    def _extra_view(self) -> dict[str, Any]:
        """Subclass metadata shown by ``public_view`` (and stored)."""
        return {}

    def _digest_json(self) -> dict[str, Any]:
        """The stored digest of the secret: in the file, never in ``public_view``."""
        raise NotImplementedError

    @staticmethod
    def common_fields(item: dict[str, Any]) -> dict[str, Any]:
        """The :class:`StoredRecord` fields of one file item, as constructor keywords."""
        return {
            "owner": str(item["owner"]),
            "scopes": frozenset(str(s) for s in item["scopes"]),
            "created_at": epoch_time(item["created_at"]) or 0.0,
            "disabled": bool(item.get("disabled", False)),
        }


R = TypeVar("R", bound=StoredRecord)


class RecordStore(Generic[R]):
    """A store file of ``R`` records, cached in memory and re-read when the file changes.

    Subclasses set the class attributes: the record type, the file's list key (also the
    count field of the reload log line), a label for error messages, the prefix of log
    events, the error type raised, and the logger.
    """

    record_type: type[R]
    list_key: ClassVar[str]
    label: ClassVar[str]
    event_prefix: ClassVar[str]
    error: ClassVar[type[RecordStoreError]] = RecordStoreError
    log: ClassVar[Any]

    def __init__(self, path: Path, *, reload_interval_s: float = 1.0) -> None:
        self.path = path
        self._probe = FileChangeProbe(path, reload_interval_s)
        self._by_id: dict[str, R] = {}
        self._reload(initial=True)

    def __len__(self) -> int:
        return len(self._by_id)

    # --- serving ---------------------------------------------------------------------

    def _current(self) -> dict[str, R]:
        """The records in memory, re-read first if the file changed (hot path)."""
        if self._probe.changed():
            self._reload(initial=False)
        return self._by_id

    def _reload(self, *, initial: bool) -> None:
        seen = fingerprint(self.path)
        try:
            records = self._read()
        except (OSError, RecordStoreError) as exc:
            # Keep serving the last good version; a broken edit must not lock everyone out.
            self.log.error(
                f"{self.event_prefix}_reload_failed", path=str(self.path), error=str(exc)
            )
        else:
            self._by_id = records
            if not initial:  # the first load is reported by whoever built the store
                self.log.info(
                    f"{self.event_prefix}_reloaded",
                    path=str(self.path),
                    **{self.list_key: len(records)},
                )
        self._probe.mark_seen(seen)

    # --- the file ----------------------------------------------------------------------

    def _read(self) -> dict[str, R]:
        try:
            items = read_json_store(self.path, version=STORE_VERSION, list_key=self.list_key)
            records = [self.record_type.from_json(item) for item in items or []]
        except (ValueError, KeyError, TypeError) as exc:
            raise self.error(f"{self.label} {self.path} is malformed: {exc}") from None
        return {r.record_id: r for r in records}

    def _write(self, records: dict[str, R]) -> None:
        items = [r.to_json() for r in records.values()]
        write_json_store(self.path, version=STORE_VERSION, list_key=self.list_key, items=items)

    # --- administration (CLI) --------------------------------------------------------

    def _checked_owner_and_scopes(
        self, owner: str, scopes: list[str] | frozenset[str]
    ) -> tuple[str, frozenset[str]]:
        if not owner.strip():
            raise self.error("owner must not be empty")
        return owner.strip(), validate_scopes(scopes, self.error)

    def _add(self, record: R) -> None:
        with exclusive_edit(self.path):
            records = self._read()
            records[record.record_id] = record
            self._write(records)

    def records(self) -> list[R]:
        """Every record in the file (re-read now), oldest first."""
        return sorted(self._read().values(), key=lambda r: r.created_at)

    def revoke(self, record_id: str) -> bool:
        """Disable a record (kept for audit); ``False`` when there is no such record."""
        with exclusive_edit(self.path):
            records = self._read()
            if record_id not in records:
                return False
            records[record_id] = replace(records[record_id], disabled=True)
            self._write(records)
        return True

    def delete(self, record_id: str) -> bool:
        """Remove a record for good; ``False`` when there is no such record."""
        with exclusive_edit(self.path):
            records = self._read()
            if records.pop(record_id, None) is None:
                return False
            self._write(records)
        return True
