"""``cnnlstm config|backup|restore`` end to end on temporary files (no Ray)."""

from __future__ import annotations

import json
import tarfile
from datetime import UTC, datetime
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
    monkeypatch.setattr("app.cli.config_cmds._validate_with_serve", lambda config: None)
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


def test_backup_configs_leaves_the_key_material_the_config_names_out(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A config folder that also holds the JWT secret and the TLS key, as a laptop's may.
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "jwt-secret").write_text("s" * 64)
    (folder / "tls.key").write_text("-----BEGIN PRIVATE KEY-----")
    (folder / "extra.yaml").write_text("a: 1")
    config = yaml.safe_load(site.read_text())
    config["security"] = {"authentication": {"jwt_secret_path": str(folder / "jwt-secret")}}
    config["network_security"] = {"tls": {"key_path": str(folder / "tls.key")}}
    config["config_backup"]["paths"] = [str(folder)]
    site.write_text(yaml.safe_dump(config))

    assert run_cli(["--config", str(site), "backup", "configs"]) == 0
    out = capsys.readouterr().out
    archive = Path(out.split()[0])
    with tarfile.open(archive) as tar:
        names = {name.partition("/")[2] for name in tar.getnames()}  # under the data folder
    assert {"config.yaml", "etc/extra.yaml"} <= names
    assert not {"etc/jwt-secret", "etc/tls.key"} & names
    assert "left out 2 key file(s)" in out


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


def _schedules_config(tmp_path: Path, models: str, configs: str) -> Path:
    path = tmp_path / "schedules.yaml"
    path.write_text(yaml.safe_dump({
        "model_backup": {"schedule": models, "retention_days": 30, "storage_path": "/b/m"},
        "config_backup": {"schedule": configs, "retention_days": 90, "storage_path": "/b/c"},
    }))  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("models", "configs"),
    [("0 2 * * MON-FRI", "@daily"), ("0 2 * JAN *", "30 3 * * sun"), ("@weekly", "@hourly")],
)
def test_config_check_accepts_names_and_macros_in_schedules(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    models: str,
    configs: str,
) -> None:
    monkeypatch.setattr("app.cli.config_cmds._validate_with_serve", lambda config: None)
    path = _schedules_config(tmp_path, models, configs)
    assert run_cli(["config", "check", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: OK"


def test_config_check_names_the_fault_in_a_malformed_schedule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.cli.config_cmds._validate_with_serve", lambda config: None)
    path = _schedules_config(tmp_path, "0 2 * * MON-FRY", "0 3 * *")
    assert run_cli(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "model_backup.schedule: bad cron expression '0 2 * * MON-FRY': bad day-of-week" in err
    assert "config_backup.schedule: bad cron expression '0 3 * *': needs 5 fields" in err
    assert "2 problem(s)" in err


def test_config_check_json_is_one_document_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.cli.config_cmds._validate_with_serve", lambda config: None)
    good = _schedules_config(tmp_path, "@daily", "0 3 * * *")
    assert run_cli(["config", "check", str(good), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"file": str(good), "ok": True, "problems": []}
    bad = _schedules_config(tmp_path, "@daily", "0 99 * * *")
    assert run_cli(["config", "check", "--json", str(bad)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert [p.split(":")[0] for p in report["problems"]] == ["config_backup.schedule"]
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text("autoscaling:\n  target_num_ongoing_request_per_replica: 3\n")
    assert run_cli(["config", "check", str(misspelt), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert "target_num_ongoing_request_per_replica" in report["problems"][0]


def test_config_goes_before_or_after_the_subcommand(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["backup", "configs", "--config", str(site)]) == 0
    capsys.readouterr()
    after = run_cli(["backup", "list", "configs", "--config", str(site)])
    listed_after = capsys.readouterr().out
    assert run_cli(["--config", str(site), "backup", "list", "configs"]) == after == 0
    assert capsys.readouterr().out == listed_after
    assert listed_after.startswith("configs")
    # After the subcommand wins over before it, as the last value of an option does.
    assert run_cli(["--config", "/nonexistent.yaml", "backup", "list", "--config", str(site)]) == 0


def test_backup_list_and_restore_json(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["--config", str(site), "backup", "models"]) == 0
    archive = capsys.readouterr().out.split()[0]
    assert run_cli(["backup", "list", "--json", "--config", str(site)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["path"], r["has_checksum"]) for r in rows] == [("models", archive, True)]
    assert rows[0]["size"] > 0
    datetime.fromisoformat(rows[0]["created"])

    target = tmp_path / "restored"
    argv = ["restore", "models", archive, "--target", str(target), "--json"]
    assert run_cli([*argv, "--config", str(site)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "kind": "models", "archive": archive, "target": str(target), "ok": True,
    }  # fmt: skip
    assert (target / "cnn_lstm" / "DEFAULT").read_text() == "v1\n"

    Path(archive).write_bytes(Path(archive).read_bytes()[:-10])
    assert run_cli([*argv, "--config", str(site)]) == 1
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["ok"] is False
    assert report["error"]
    assert "untouched" in out.err

    assert run_cli(["--config", str(site), "restore", "configs", archive, "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_backup_list_json_of_nothing_is_an_empty_list(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["--config", str(site), "backup", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_backup_schedule_reads_each_schedule_in_its_own_zone(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the CronJobs read them: each section's schedule in that section's timezone.
    config = yaml.safe_load(site.read_text())
    config["config_backup"]["timezone"] = "America/New_York"
    site.write_text(yaml.safe_dump(config))
    from app.ops import scheduler

    start = datetime(2026, 11, 27, tzinfo=UTC).timestamp()
    now, ran = [start], []
    real_loop = scheduler.run_forever

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def loop(jobs: list[scheduler.Job], **kw: object) -> None:
        kw.update(clock=lambda: now[0], sleep=sleep, should_stop=lambda: now[0] > start + 86400)
        real_loop(jobs, **kw)  # type: ignore[arg-type]

    def backup(args: object) -> int:
        ran.append((args.what, datetime.fromtimestamp(now[0], tz=UTC).strftime("%H:%M")))  # type: ignore[attr-defined]
        return 0

    monkeypatch.setattr(scheduler, "run_forever", loop)
    monkeypatch.setattr("app.cli.backup_cmds._backup", backup)
    heartbeat = str(tmp_path / "hb")
    assert run_cli(["--config", str(site), "backup", "schedule", "--heartbeat", heartbeat]) == 0
    assert ran == [("models", "02:00"), ("configs", "08:00")]  # 03:00 in New York (EST)


@pytest.mark.parametrize(
    ("argv", "zone", "says"),
    [
        (["--models-cron", "0 25 * * *"], "UTC", "bad hour"),
        ([], "Mars/Olympus_Mons", "Mars/Olympus_Mons"),
    ],
)
def test_backup_schedule_refuses_a_bad_schedule_or_zone_with_a_message(
    site: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    zone: str,
    says: str,
) -> None:
    config = yaml.safe_load(site.read_text())
    config["config_backup"]["timezone"] = zone
    site.write_text(yaml.safe_dump(config))
    heartbeat = ["--heartbeat", str(tmp_path / "hb")]
    assert run_cli(["--config", str(site), "backup", "schedule", *argv, *heartbeat]) == 2
    assert says in capsys.readouterr().err
