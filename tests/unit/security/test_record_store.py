"""The record store both credential stores are built on, checked through each of them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from app.security.api_keys import ApiKeyRecord, ApiKeyStore, ApiKeyStoreError
from app.security.clients import ClientRecord, ClientStore, ClientStoreError
from app.security.record_store import (
    RecordStore,
    RecordStoreError,
    StoredRecord,
    epoch_time,
    iso_time,
    validate_scopes,
)


@dataclass(frozen=True)
class Kind:
    name: str
    store_type: type[RecordStore[Any]]
    error: type[RecordStoreError]
    list_key: str
    id_field: str
    digest_field: str
    label: str
    event_prefix: str
    # create a record, return (record, secret); check the secret against a live store
    create: Callable[[Any], tuple[Any, str]]
    accepts: Callable[[Any, Any, str], bool]


API_KEYS = Kind(
    name="api_keys",
    store_type=ApiKeyStore,
    error=ApiKeyStoreError,
    list_key="keys",
    id_field="key_id",
    digest_field="sha256",
    label="API key store",
    event_prefix="api_key_store",
    create=lambda store: store.create(owner="desk", scopes=["model:predict"]),
    accepts=lambda store, record, secret: store.verify(secret) is not None,
)
CLIENTS = Kind(
    name="clients",
    store_type=ClientStore,
    error=ClientStoreError,
    list_key="clients",
    id_field="client_id",
    digest_field="secret_hash",
    label="client store",
    event_prefix="client_store",
    create=lambda store: store.create(owner="risk", scopes=["model:stats"]),
    accepts=lambda store, record, secret: store.authenticate(record.client_id, secret) is not None,
)


@pytest.fixture(params=[API_KEYS, CLIENTS], ids=lambda k: k.name)
def kind(request: pytest.FixtureRequest) -> Kind:
    param: Kind = request.param
    return param


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "secrets" / "store.json"


def test_both_stores_are_record_stores_with_typed_errors() -> None:
    assert issubclass(ApiKeyStore, RecordStore)
    assert issubclass(ClientStore, RecordStore)
    assert issubclass(ApiKeyRecord, StoredRecord)
    assert issubclass(ClientRecord, StoredRecord)
    assert issubclass(ApiKeyStoreError, RecordStoreError)
    assert issubclass(ClientStoreError, RecordStoreError)


def test_file_item_round_trips_to_an_equal_record(kind: Kind, path: Path) -> None:
    store = kind.store_type(path, reload_interval_s=0.0)
    record, _ = kind.create(store)
    [item] = json.loads(path.read_text())[kind.list_key]
    assert item[kind.id_field] == record.record_id
    assert item["created_at"].endswith("+00:00")
    assert type(record).from_json(item) == record
    assert store.records() == [record]


def test_public_view_has_metadata_but_never_the_digest(kind: Kind, path: Path) -> None:
    record, secret = kind.create(kind.store_type(path))
    view = record.public_view()
    assert kind.digest_field not in view
    assert secret not in json.dumps(view)
    assert {kind.id_field, "owner", "scopes", "created_at", "disabled"} <= set(view)
    assert record.to_json()[kind.digest_field]


def test_server_side_store_sees_a_record_added_by_another_process(kind: Kind, path: Path) -> None:
    server_side = kind.store_type(path, reload_interval_s=0.0)
    with capture_logs() as events:
        record, secret = kind.create(kind.store_type(path))
        assert kind.accepts(server_side, record, secret)
    reloaded = [e for e in events if e["event"] == f"{kind.event_prefix}_reloaded"]
    assert [e[kind.list_key] for e in reloaded] == [1]
    assert len(server_side) == 1


def test_server_side_store_keeps_last_good_records_when_file_corrupted(
    kind: Kind, path: Path
) -> None:
    server_side = kind.store_type(path, reload_interval_s=0.0)
    record, secret = kind.create(kind.store_type(path))
    assert kind.accepts(server_side, record, secret)
    path.write_text("{ not json")
    with capture_logs() as events:
        assert kind.accepts(server_side, record, secret)
    [failed] = [e for e in events if e["event"] == f"{kind.event_prefix}_reload_failed"]
    assert failed["path"] == str(path)
    assert secret not in str(events)


@pytest.mark.parametrize(
    "content",
    [
        "{ not json",
        '{"version": 2, "keys": [], "clients": []}',
        '{"version": 1, "keys": {}, "clients": {}}',
        '{"version": 1, "keys": [{"owner": "x"}], "clients": [{"owner": "x"}]}',
    ],
)
def test_admin_reads_of_a_malformed_file_raise_the_store_error(
    kind: Kind, path: Path, content: str
) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(content)
    store = kind.store_type(path)
    assert len(store) == 0
    with pytest.raises(kind.error, match=f"^{kind.label} .* is malformed"):
        store.records()


def test_revoke_disables_and_delete_removes(kind: Kind, path: Path) -> None:
    server_side = kind.store_type(path, reload_interval_s=0.0)
    admin = kind.store_type(path)
    record, secret = kind.create(admin)
    assert admin.revoke(record.record_id) is True
    assert not kind.accepts(server_side, record, secret)
    assert [r.disabled for r in admin.records()] == [True]
    assert admin.delete(record.record_id) is True
    assert admin.records() == []
    assert admin.revoke(record.record_id) is False
    assert admin.delete(record.record_id) is False


@pytest.mark.parametrize(
    ("owner", "scopes", "message"),
    [
        ("  ", ["model:predict"], "owner must not be empty"),
        ("desk", [], "at least one scope is required"),
        ("desk", ["bad scope"], "invalid scope name"),
    ],
)
def test_create_refuses_bad_owner_or_scopes_with_the_store_error(
    kind: Kind, path: Path, owner: str, scopes: list[str], message: str
) -> None:
    with pytest.raises(kind.error, match=message):
        kind.store_type(path).create(owner=owner, scopes=scopes)
    assert not path.exists()


def test_validate_scopes_raises_the_given_error_type() -> None:
    assert validate_scopes(["a:b", "c/d"]) == frozenset({"a:b", "c/d"})
    with pytest.raises(ClientStoreError):
        validate_scopes(["x" * 65], ClientStoreError)


def test_time_helpers_round_trip_through_utc_iso() -> None:
    assert iso_time(None) is None
    assert epoch_time(None) is None
    assert iso_time(1_800_000_000.0) == "2027-01-15T08:00:00+00:00"
    assert epoch_time(iso_time(1_800_000_000.0)) == 1_800_000_000.0
