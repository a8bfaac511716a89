"""``cnnlstm audit query|verify`` against a trail on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli.main import main
from tests.unit.audit.audit_support import submit_one, trail


@pytest.fixture
def config(tmp_path: Path) -> Path:
    t = trail(tmp_path / "audit", rotate_bytes=4096)
    t.start()
    for i in range(40):
        submit_one(t, i, f"req-{i}")
    t.stop()
    path = tmp_path / "config.yaml"
    path.write_text(f"audit:\n  path: {tmp_path / 'audit'}\n")
    return path


def test_verify_passes_on_an_untouched_trail(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "audit", "verify"]) == 0
    assert "ok," in capsys.readouterr().out


def test_verify_exits_1_and_names_the_file_when_one_is_deleted(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = sorted((config.parent / "audit" / "stream-0").glob("*.gz"))[0]
    victim.unlink()
    assert main(["audit", "verify", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{victim.name} was removed without a retention record" in err
    assert "audit chain BROKEN in stream-0" in err


def test_query_by_request_id_prints_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "audit", "query", "--request-id", "req-7", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["request_id"] for r in records] == ["req-7"]


def test_query_by_model_version_and_time(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--config", str(config), "audit", "query", "--model-version", "1.0.0"]
    assert main([*argv, "--since", "2000-01-01T00:00:00Z", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 40
    assert main([*argv, "--until", "2000-01-01", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["--config", str(config), "audit", "query", "--model-version", "9"]) == 0
    assert "0 record(s)" in capsys.readouterr().err


def test_an_audit_command_without_a_configured_path_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("audit:\n  enabled: false\n")
    assert main(["--config", str(path), "audit", "verify"]) == 2
    assert "audit trail is off" in capsys.readouterr().err
