"""``cnnlstm config|backup|restore`` end to end on temporary files (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.unit.ops.ops_cli import run_cli


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> Path:
    """A config whose registry and backup folders live under ``tmp_path``."""
    registry = tmp_path / "models"
    (registry / "cnn_lstm" / "v1").mkdir(parents=True)
    (registry / "cnn_lstm" / "v1" / "manifest.json").write_text('{"v": 1}')
    (registry / "cnn_lstm" / "DEFAULT").write_text("v1\n")
    config = {
        "model_registry": {"path": str(registry)},
        "model_backup": {"schedule": "0 2 * * *", "retention_days": 30,
                         "storage_path": str(tmp_path / "backups/models")},
        "config_backup": {"schedule": "0 3 * * *", "retention_days": 90,
                          "storage_path": str(tmp_path / "backups/configs")},
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("MODEL_REGISTRY_PATH", str(registry))  # spec 8 wins at run time
    return path


def test_config_check_reports_a_misspelt_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("autoscaling:\n  target_num_ongoing_request_per_replica: 3\n")
    assert run_cli(["config", "check", str(bad)]) == 1
    assert "target_num_ongoing_request_per_replica" in capsys.readouterr().err


def test_config_check_reports_a_bad_backup_schedule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.cli.ops_cmds._validate_with_serve", lambda config: None)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_backup:\n  schedule: '0 25 * * *'\n  retention_days: 1\n"
                   "  storage_path: /b\n")  # fmt: skip
    assert run_cli(["config", "check", str(bad)]) == 1
    assert "model_backup.schedule" in capsys.readouterr().err


def test_backup_then_restore_models_through_the_cli(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["--config", str(site), "backup", "models"]) == 0
    archive = Path(capsys.readouterr().out.split()[0])
    assert archive.parent == tmp_path / "backups/models"
    target = tmp_path / "restored"
    assert run_cli(["--config", str(site), "restore", "models", str(archive),
                    "--target", str(target)]) == 0  # fmt: skip
    assert (target / "cnn_lstm" / "DEFAULT").read_text() == "v1\n"


def test_restore_of_a_corrupted_archive_exits_nonzero_and_keeps_the_registry(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli(["--config", str(site), "backup", "models"])
    archive = Path(capsys.readouterr().out.split()[0])
    archive.write_bytes(archive.read_bytes()[:-10])
    assert run_cli(["--config", str(site), "restore", "models", str(archive)]) == 1
    assert "untouched" in capsys.readouterr().err
    assert (tmp_path / "models" / "cnn_lstm" / "DEFAULT").read_text() == "v1\n"


def test_backup_configs_archives_the_config_in_use_and_lists_it(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["--config", str(site), "backup", "configs"]) == 0
    capsys.readouterr()
    assert run_cli(["--config", str(site), "backup", "list", "configs"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("configs")
    assert "ok" in listing


def test_restore_configs_requires_an_explicit_target(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli(["--config", str(site), "backup", "configs"])
    archive = capsys.readouterr().out.split()[0]
    assert run_cli(["--config", str(site), "restore", "configs", archive]) == 2


def test_render_serve_prints_a_serve_config(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--config", str(site), "config", "render-serve", "--device", "cpu"]) == 0
    rendered = yaml.safe_load(capsys.readouterr().out)
    app = rendered["applications"][0]
    assert app["import_path"] == "app.serve.build:build_app"
    assert app["args"] == {"config_path": str(site)}
    assert [d["name"] for d in app["deployments"]] == ["gateway", "cnn_lstm_predictor"]
