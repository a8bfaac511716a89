"""The security CLI: keys, tokens, clients and the JWT secret."""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

import jwt as pyjwt
import pytest
import yaml

from app.cli.security_cmds import register
from app.security.api_keys import ApiKeyStore, parse_key_id
from app.security.clients import ClientStore


def run(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cnnlstm")
    parser.add_argument("--config", default=None)
    register(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args(args)
    return int(parsed.func(parsed))


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CNNLSTM_CONFIG", raising=False)
    secrets = tmp_path / "secrets"
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "security": {
                    "authentication": {
                        "api_key_store_path": str(secrets / "api-keys.json"),
                        "client_store_path": str(secrets / "clients.json"),
                        "jwt_secret_path": str(secrets / "jwt-secret"),
                        "jwt_issuer": "https://issuer.test",
                    }
                }
            }
        )
    )
    return path


def test_apikey_create_prints_the_key_once_on_stdout(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run(["--config", str(config_file), "apikey", "create", "--owner", "desk-a",
              "--scope", "model:predict", "--rate-limit", "50", "--burst", "100",
              "--priority", "2", "--ttl-days", "30"])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0
    [key] = out.splitlines()
    key_id = parse_key_id(key)
    assert key_id is not None
    assert key_id in err
    assert key not in err
    record = ApiKeyStore(tmp_path / "secrets" / "api-keys.json").verify(key)
    assert record is not None
    assert (record.owner, record.rate_limit_per_s, record.burst, record.priority) == (
        "desk-a",
        50.0,
        100,
        2,
    )
    assert record.expires_at is not None


def test_apikey_create_refuses_unknown_scope(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run(["--config", str(config_file), "apikey", "create", "--owner", "a",
              "--scope", "model:predcit"])  # fmt: skip
    assert rc == 2
    assert "unknown scope" in capsys.readouterr().err


def test_apikey_list_shows_ids_but_no_secret(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(
        [
            "--config",
            str(config_file),
            "apikey",
            "create",
            "--owner",
            "a",
            "--scope",
            "model:predict",
        ]
    )
    key = capsys.readouterr().out.strip()
    assert run(["--config", str(config_file), "apikey", "list"]) == 0
    table = capsys.readouterr().out
    assert parse_key_id(key) in table
    assert key[-43:] not in table
    assert run(["--config", str(config_file), "apikey", "list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert "sha256" not in row


def test_apikey_revoke_and_delete_stop_the_key(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_path = tmp_path / "secrets" / "api-keys.json"
    run(
        [
            "--config",
            str(config_file),
            "apikey",
            "create",
            "--owner",
            "a",
            "--scope",
            "model:predict",
        ]
    )
    key = capsys.readouterr().out.strip()
    key_id = parse_key_id(key)
    assert key_id is not None
    assert run(["--config", str(config_file), "apikey", "revoke", key_id]) == 0
    assert ApiKeyStore(store_path).verify(key) is None
    assert run(["--config", str(config_file), "apikey", "delete", key_id]) == 0
    assert ApiKeyStore(store_path).list_keys() == []
    assert run(["--config", str(config_file), "apikey", "revoke", key_id]) == 1


def test_token_mints_a_verifiable_jwt_with_the_secret_file(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--config", str(config_file), "secret", "init"]) == 0
    capsys.readouterr()
    rc = run(["--config", str(config_file), "token", "--scope", "model:stats",
              "--ttl", "120", "--subject", "prometheus"])  # fmt: skip
    token = capsys.readouterr().out.strip()
    assert rc == 0
    secret = (tmp_path / "secrets" / "jwt-secret").read_bytes().strip()
    claims = pyjwt.decode(token, secret, algorithms=["HS256"], issuer="https://issuer.test")
    assert (claims["sub"], claims["scope"], claims["exp"] - claims["iat"]) == (
        "prometheus",
        "model:stats",
        120,
    )


def test_token_fails_cleanly_when_secret_file_missing(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(["--config", str(config_file), "token", "--scope", "model:stats", "--ttl", "60"]) == 1
    )
    assert "not found" in capsys.readouterr().err


def test_secret_init_writes_0600_and_refuses_to_overwrite(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "secrets" / "jwt-secret"
    assert run(["--config", str(config_file), "secret", "init"]) == 0
    first = path.read_bytes()
    assert len(first.strip()) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert run(["--config", str(config_file), "secret", "init"]) == 1
    assert path.read_bytes() == first
    assert run(["--config", str(config_file), "secret", "init", "--force"]) == 0
    assert path.read_bytes() != first
    out, err = capsys.readouterr()
    assert out == ""
    assert first.decode().strip() not in err


def test_client_create_list_revoke(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run(["--config", str(config_file), "client", "create", "--owner", "risk",
              "--scope", "model:stats"])  # fmt: skip
    created = json.loads(capsys.readouterr().out)
    assert rc == 0
    store = ClientStore(tmp_path / "secrets" / "clients.json")
    assert store.authenticate(created["client_id"], created["client_secret"]) is not None
    assert run(["--config", str(config_file), "client", "list", "--json"]) == 0
    listing = capsys.readouterr().out
    assert created["client_id"] in listing
    assert created["client_secret"] not in listing
    assert run(["--config", str(config_file), "client", "revoke", created["client_id"]]) == 0
    assert (
        ClientStore(store.path).authenticate(created["client_id"], created["client_secret"]) is None
    )


def test_client_commands_fail_when_no_client_store_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CNNLSTM_CONFIG", raising=False)
    bare = tmp_path / "bare.yaml"
    bare.write_text("{}\n")
    assert run(["--config", str(bare), "client", "list"]) == 1
    assert "client_store_path" in capsys.readouterr().err
