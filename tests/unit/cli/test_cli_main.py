"""``cnnlstm`` itself: global options anywhere, --version, train forwarding, --json, completion."""

from __future__ import annotations

import json
import sys
import tomllib
import types
from pathlib import Path

import pytest
import yaml

from app.cli.common import parse_args
from app.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[3]
SPEC8_VARIABLES = (
    "MODEL_REGISTRY_PATH", "LOG_LEVEL", "DEVICE", "CNNLSTM_CONFIG",
    "MAX_BATCH_SIZE", "BATCH_TIMEOUT_MS", "CACHE_TTL_SECONDS",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SPEC8_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model_registry": {"path": str(tmp_path / "models")}}))
    return path


def pyproject_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        version: str = tomllib.load(fh)["project"]["version"]
    return version


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "X", "registry", "list"],
        ["registry", "list", "--config", "X"],
        ["registry", "--config", "X", "list"],
        ["registry", "validate", "cnn_lstm", "--config", "X", "--json"],
        ["backup", "list", "models", "--config", "X"],
        ["config", "check", "f.yaml", "--config", "X"],
        ["restore", "models", "a.tar.gz", "--config", "X", "--json"],
        ["apikey", "list", "--config", "X"],
        ["token", "--scope", "model:stats", "--ttl", "60", "--config", "X"],
        ["rollout", "status", "--config", "X"],
        ["serve", "--demo", "--config", "X"],
        ["bench", "--config", "X"],
        ["train", "--config", "X"],
        ["--config", "X", "completion", "bash"],
    ],
)
def test_config_is_accepted_before_and_after_the_subcommand(argv: list[str]) -> None:
    assert parse_args(build_parser(), argv).config == "X"


def test_config_defaults_to_none_and_the_last_one_wins() -> None:
    parser = build_parser()
    assert parse_args(parser, ["registry", "list"]).config is None
    assert parse_args(parser, ["--config", "A", "registry", "list", "--config", "B"]).config == "B"


def test_unknown_options_are_still_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["registry", "list", "--bogus"])
    assert info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"cnnlstm {pyproject_version()}\n"


class _Trainer:
    """Stands in for ``model.train`` (no torch): records what ``main_train`` was given."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def main_train(self, argv: list[str]) -> int:
        self.calls.append(argv)
        return 0


@pytest.fixture
def trainer(monkeypatch: pytest.MonkeyPatch) -> _Trainer:
    fake = _Trainer()
    module = types.ModuleType("model.train")
    module.main_train = fake.main_train  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "model.train", module)
    return fake


@pytest.mark.parametrize(
    ("argv", "forwarded"),
    [
        (["train"], []),
        (
            ["train", "--epochs", "1", "--source", "synthetic"],
            ["--epochs", "1", "--source", "synthetic"],
        ),
        (["train", "--", "--epochs", "1"], ["--epochs", "1"]),
        (["train", "--epochs", "1", "--", "--seed", "3"], ["--epochs", "1", "--seed", "3"]),
        (["train", "--version", "v2", "--no-default"], ["--version", "v2", "--no-default"]),
        (["train", "--max-seconds=5"], ["--max-seconds=5"]),
    ],
)  # fmt: skip
def test_train_forwards_its_options_to_the_trainer(
    trainer: _Trainer, config_file: Path, argv: list[str], forwarded: list[str]
) -> None:
    registry = str(config_file.parent / "models")
    assert main(["--config", str(config_file), *argv]) == 0
    assert main(["train", "--config", str(config_file), *argv[1:]]) == 0
    expected = ["--registry", registry, *forwarded]
    assert trainer.calls == [expected, expected]


def test_after_a_double_dash_everything_goes_to_the_trainer(
    trainer: _Trainer, config_file: Path
) -> None:
    assert main(["train", "--epochs", "1", "--config", str(config_file)]) == 0
    assert main(["train", "--", "--epochs", "1", "--config", "X"]) == 0
    registry = str(config_file.parent / "models")
    assert trainer.calls[0] == ["--registry", registry, "--epochs", "1"]
    assert trainer.calls[1][-4:] == ["--epochs", "1", "--config", "X"]  # the trainer refuses it


def test_train_keeps_an_explicit_registry_and_leaves_help_to_the_trainer(
    trainer: _Trainer, config_file: Path
) -> None:
    assert main(["--config", str(config_file), "train", "--registry", "/r", "--epochs", "2"]) == 0
    assert main(["train", "--registry=/r"]) == 0
    assert main(["train", "--help"]) == 0
    assert main(["train", "-h"]) == 0
    assert trainer.calls == [
        ["--registry", "/r", "--epochs", "2"], ["--registry=/r"], ["--help"], ["-h"],
    ]  # fmt: skip


def test_train_options_reach_the_real_trainer(
    monkeypatch: pytest.MonkeyPatch, config_file: Path
) -> None:
    """Through both parsers (ours, then model.train's), stopping before any training."""
    import model.train

    class Parsed(Exception):
        pass

    seen: dict[str, object] = {}

    def fake_train(registry: Path, **kwargs: object) -> None:
        seen.update(kwargs, registry=registry)
        raise Parsed

    monkeypatch.setattr(model.train, "train", fake_train)
    for argv in (
        ["train", "--epochs", "1", "--source", "synthetic"],
        ["train", "--", "--epochs", "1", "--source", "synthetic"],
    ):
        seen.clear()
        with pytest.raises(Parsed):
            main(["--config", str(config_file), *argv])
        assert seen["epochs"] == 1
        assert seen["source"] == "synthetic"
        assert seen["registry"] == config_file.parent / "models"


def test_registry_validate_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from model.common.artifact import WEIGHTS_FILE
    from model.export import make_random_artifact

    registry = tmp_path / "models"
    monkeypatch.setenv("MODEL_REGISTRY_PATH", str(registry))
    assert main(["registry", "validate", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {
        "registry": str(registry), "ok": False, "results": [], "error": "nothing to validate",
    }  # fmt: skip

    make_random_artifact(registry, version="0.0.1")
    make_random_artifact(registry, version="0.0.2", seed=1)
    assert main(["registry", "validate", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert [(r["version"], r["ok"], r["error"]) for r in report["results"]] == [
        ("0.0.1", True, None), ("0.0.2", True, None),
    ]  # fmt: skip

    weights = registry / "cnn_lstm" / "0.0.2" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert main(["registry", "validate", "cnn_lstm", "--json"]) == 1
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["ok"] is False
    bad = [r for r in report["results"] if not r["ok"]]
    assert [r["version"] for r in bad] == ["0.0.2"]
    assert bad[0]["error"]
    assert out.err == ""  # with --json, stdout carries the verdicts


@pytest.mark.parametrize("argv", [["registry", "list"], ["backup", "list"], ["audit", "verify"]])
def test_a_missing_config_file_is_a_message_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["--config", str(missing), *argv]) == 2
    err = capsys.readouterr().err
    assert f"configuration file not found: {missing}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["nosuch", "../etc"])
def test_registry_validate_of_an_unknown_model_is_a_verdict_not_a_traceback(
    config_file: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    (config_file.parent / "models").mkdir()
    assert main(["--config", str(config_file), "registry", "validate", name]) == 1
    assert name in capsys.readouterr().err
    assert main(["--config", str(config_file), "registry", "validate", name, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert name in report["error"]


def test_registry_list_names_an_unreadable_default_pointer(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model.export import make_random_artifact

    registry = config_file.parent / "models"
    make_random_artifact(registry, version="0.0.1")
    (registry / "cnn_lstm" / "DEFAULT").write_text("")  # truncated by a hand edit or a crash
    assert main(["--config", str(config_file), "registry", "list"]) == 0
    out = capsys.readouterr()
    assert "cnn_lstm/0.0.1" in out.out
    assert "DEFAULT" in out.err


@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete -o"), ("zsh", "#compdef")])
def test_completion_scripts_know_the_commands(
    shell: str, marker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert marker in script
    for word in ("registry", "validate", "backup", "restore", "completion", "--config"):
        assert word in script


def test_apikey_store_option_manages_an_offline_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.security.api_keys import ApiKeyStore

    store = tmp_path / "keys" / "api-keys.json"
    assert main(["apikey", "create", "--owner", "desk", "--scope", "model:predict",
                 "--store", str(store)]) == 0  # fmt: skip
    key = capsys.readouterr().out.strip()
    record = ApiKeyStore(store).verify(key)
    assert record is not None
    assert record.owner == "desk"
    assert main(["apikey", "list", "--json", "--store", str(store)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["key_id"] for k in listed] == [record.key_id]
    assert key not in store.read_text(), "the file holds the key's digest, never the key"
    assert main(["apikey", "revoke", record.key_id, "--store", str(store)]) == 0
    assert ApiKeyStore(store).verify(key) is None
