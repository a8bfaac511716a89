"""API keys: format, entropy, digest-only storage, checks, reload on change."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
from pathlib import Path

import pytest

from app.security import api_keys, secret_files
from app.security.api_keys import (
    API_KEY_LENGTH,
    ApiKeyStore,
    ApiKeyStoreError,
    generate_api_key,
    parse_key_id,
)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "secrets" / "api-keys.json"


@pytest.fixture
def store(store_path: Path) -> ApiKeyStore:
    return ApiKeyStore(store_path, reload_interval_s=0.0)


def test_generated_key_has_prefix_id_and_43_char_secret() -> None:
    key_id, key = generate_api_key()
    assert len(key) == API_KEY_LENGTH == 60
    assert key.startswith(f"cnl_{key_id}_")
    assert len(key_id) == 12
    assert all(c in "0123456789abcdef" for c in key_id)
    assert parse_key_id(key) == key_id


def test_generated_keys_carry_256_random_bits_and_never_repeat() -> None:
    keys = [generate_api_key()[1] for _ in range(2000)]
    assert len(set(keys)) == 2000
    secret = keys[0][-43:]
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    # Every base64url symbol shows up across the secrets: nothing is fixed or skewed.
    assert set("".join(k[-43:] for k in keys)) >= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "cnl_",
        "not-a-key",
        "cnl_ABCDEF012345_" + "a" * 43,  # upper-case id
        "cnl_0123456789ab_" + "a" * 42,  # short secret
        "cnl_0123456789ab_" + "a" * 44,  # long secret
        "cnl_0123456789ab-" + "a" * 43,  # wrong separator
        "xyz_0123456789ab_" + "a" * 43,  # wrong prefix
        "cnl_0123456789ab_" + "a" * 42 + "!",  # not base64url
    ],
)
def test_parse_key_id_returns_none_when_malformed(raw: str) -> None:
    assert parse_key_id(raw) is None


def test_store_file_holds_only_the_digest_when_key_created(
    store: ApiKeyStore, store_path: Path
) -> None:
    record, key = store.create(owner="desk-a", scopes=["model:predict"])
    text = store_path.read_text()
    assert key not in text
    assert key[-43:] not in text
    doc = json.loads(text)
    assert doc["version"] == 1
    [item] = doc["keys"]
    assert item["sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert item["key_id"] == record.key_id
    assert item["owner"] == "desk-a"
    assert item["scopes"] == ["model:predict"]
    assert stat.S_IMODE(os.stat(store_path).st_mode) == 0o600


def test_verify_returns_record_when_key_valid(store: ApiKeyStore) -> None:
    created, key = store.create(
        owner="desk-a", scopes=["model:predict"], rate_limit_per_s=5, burst=10, priority=3
    )
    record = store.verify(key)
    assert record == created
    assert (record.rate_limit_per_s, record.burst, record.priority) == (5.0, 10, 3)


def test_verify_rejects_when_secret_differs_for_a_known_id(store: ApiKeyStore) -> None:
    _, key = store.create(owner="desk-a", scopes=["model:predict"])
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert store.check(tampered) == (None, "mismatch")


def test_verify_rejects_when_key_unknown(store: ApiKeyStore) -> None:
    store.create(owner="desk-a", scopes=["model:predict"])
    assert store.check(generate_api_key()[1]) == (None, "unknown")


def test_verify_rejects_when_malformed(store: ApiKeyStore) -> None:
    assert store.check("Bearer something") == (None, "malformed")


def test_verify_rejects_when_expired(store: ApiKeyStore) -> None:
    now = 1_800_000_000.0
    _, key = store.create(owner="a", scopes=["model:predict"], expires_at=now + 10)
    assert store.verify(key, now=now + 9.999) is not None
    assert store.check(key, now=now + 10) == (None, "expired")


def test_verify_rejects_when_created_disabled(store: ApiKeyStore) -> None:
    _, key = store.create(owner="a", scopes=["model:predict"], disabled=True)
    assert store.check(key) == (None, "disabled")


def test_verify_rejects_when_revoked(store: ApiKeyStore) -> None:
    record, key = store.create(owner="a", scopes=["model:predict"])
    assert store.revoke(record.key_id) is True
    assert store.check(key) == (None, "disabled")
    assert store.revoke("0" * 12) is False


def test_verify_rejects_when_deleted(store: ApiKeyStore) -> None:
    record, key = store.create(owner="a", scopes=["model:predict"])
    assert store.delete(record.key_id) is True
    assert store.check(key) == (None, "unknown")
    assert store.delete(record.key_id) is False


def test_every_well_formed_key_goes_through_one_compare_digest(
    store: ApiKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = store.create(owner="a", scopes=["model:predict"])
    calls: list[tuple[bytes, bytes]] = []
    real = api_keys.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_keys.hmac, "compare_digest", spy)
    store.verify(key)
    store.verify(generate_api_key()[1])  # unknown id: compared against a dummy digest
    store.verify(key[:-1] + ("A" if key[-1] != "A" else "B"))
    assert len(calls) == 3
    assert all(len(a) == len(b) == 32 for a, b in calls)


def test_store_reloads_when_another_process_adds_a_key(store_path: Path) -> None:
    server_side = ApiKeyStore(store_path, reload_interval_s=0.0)
    _, key = ApiKeyStore(store_path).create(owner="cli", scopes=["model:predict"])
    assert server_side.verify(key) is not None


def test_store_checks_the_file_at_most_once_per_interval(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(secret_files.time, "monotonic", lambda: clock[0])
    server_side = ApiKeyStore(store_path, reload_interval_s=1.0)
    _, key = ApiKeyStore(store_path).create(owner="cli", scopes=["model:predict"])
    clock[0] += 0.5
    assert server_side.verify(key) is None  # not looked at yet
    clock[0] += 0.6
    assert server_side.verify(key) is not None


def test_store_keeps_last_good_keys_when_file_corrupted(store_path: Path) -> None:
    server_side = ApiKeyStore(store_path, reload_interval_s=0.0)
    _, key = ApiKeyStore(store_path).create(owner="cli", scopes=["model:predict"])
    assert server_side.verify(key) is not None
    store_path.write_text("{ not json")
    assert server_side.verify(key) is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [("rate_limit_per_s", -1), ("rate_limit_per_s", 0), ("rate_limit_per_s", "nan"),
     ("burst", 0), ("burst", -5)],
)  # fmt: skip
def test_a_hand_edited_limit_no_bucket_can_hold_is_refused_with_the_file(
    store_path: Path, field: str, value: object
) -> None:
    # Taken, each would fail every request with that key (a 500) or, at 0, mean no limit.
    server_side = ApiKeyStore(store_path, reload_interval_s=0.0)
    record, key = ApiKeyStore(store_path).create(
        owner="cli", scopes=["model:predict"], rate_limit_per_s=5.0, burst=10
    )
    assert server_side.verify(key) == record
    data = json.loads(store_path.read_text())
    data["keys"][0][field] = float(value) if value == "nan" else value
    store_path.write_text(json.dumps(data))
    assert server_side.verify(key) == record  # the last good store, limits and all
    with pytest.raises(ApiKeyStoreError, match="malformed"):
        ApiKeyStore(store_path).list_keys()


def test_list_shows_metadata_without_digest(store: ApiKeyStore) -> None:
    _, key = store.create(owner="desk-a", scopes=["model:predict", "model:stats"])
    [view] = [r.public_view() for r in store.list_keys()]
    assert "sha256" not in view
    assert key not in json.dumps(view)
    assert view["owner"] == "desk-a"
    assert view["scopes"] == ["model:predict", "model:stats"]
    assert view["disabled"] is False


@pytest.mark.parametrize("scopes", [[], ["has space"], ["x" * 65]])
def test_create_refuses_when_scopes_invalid(store: ApiKeyStore, scopes: list[str]) -> None:
    with pytest.raises(ApiKeyStoreError):
        store.create(owner="a", scopes=scopes)


def test_create_keeps_existing_keys_when_many_are_added(store: ApiKeyStore) -> None:
    keys = [store.create(owner=f"o{i}", scopes=["model:predict"])[1] for i in range(20)]
    assert all(store.verify(k) is not None for k in keys)
    assert len(store.list_keys()) == 20


def test_expiry_is_stored_as_utc_iso_time(store: ApiKeyStore, store_path: Path) -> None:
    store.create(owner="a", scopes=["model:predict"], expires_at=time.time() + 86400)
    item = json.loads(store_path.read_text())["keys"][0]
    assert item["expires_at"].endswith("+00:00")
