"""``cnnlstm rollout``: commands reach the controller's handle and print its JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.cli import rollout_cmds
from app.cli.main import main


class _Response:
    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self, timeout_s: float | None = None) -> Any:
        return self.value


class _Method:
    def __init__(self, handle: FakeHandle, name: str) -> None:
        self.handle, self.name = handle, name

    def remote(self, *args: Any) -> _Response:
        self.handle.calls.append((self.name, args))
        return _Response(self.handle.answers[self.name])


class FakeHandle:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> _Method:
        return _Method(self, name)


STATUS = {"phase": "shifting", "green_weight_pct": 25.0}


@pytest.fixture
def handle(monkeypatch: pytest.MonkeyPatch) -> FakeHandle:
    fake = FakeHandle(
        {
            "start": {"accepted": True, "reason": None, "status": STATUS},
            "abort": {"accepted": False, "reason": "no rollout in progress", "status": STATUS},
            "status": STATUS,
        }
    )
    monkeypatch.setattr(rollout_cmds, "connect", lambda config_path: fake)
    return fake


def test_start_sends_model_and_version_and_prints_the_answer(
    handle: FakeHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rollout", "start", "cnn_lstm", "2.0.0"]) == 0
    # No --shadow-s: the controller applies blue_green_deployment.shadow.duration_s.
    assert handle.calls == [("start", ("cnn_lstm", "2.0.0", None))]
    assert json.loads(capsys.readouterr().out)["status"]["phase"] == "shifting"


def test_start_passes_the_shadow_phase_length(handle: FakeHandle) -> None:
    assert main(["rollout", "start", "cnn_lstm", "2.0.0", "--shadow-s", "45"]) == 0
    assert handle.calls == [("start", ("cnn_lstm", "2.0.0", 45.0))]


def test_status_prints_the_controller_state_as_json(
    handle: FakeHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rollout", "status"]) == 0
    assert json.loads(capsys.readouterr().out) == STATUS


def test_a_refused_command_exits_non_zero_with_the_reason(
    handle: FakeHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rollout", "abort", "--reason", "bad numbers"]) == 1
    assert handle.calls == [("abort", ("bad numbers",))]
    assert "no rollout in progress" in capsys.readouterr().err


def test_start_with_wait_follows_the_rollout_to_its_end(
    handle: FakeHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    handle.answers["status"] = {"phase": "rolled_back", "green_weight_pct": 0.0}
    monkeypatch.setattr(rollout_cmds.time, "sleep", lambda s: None)
    assert main(["rollout", "start", "cnn_lstm", "2.0.0", "--wait"]) == 1
    assert "rolled_back" in capsys.readouterr().err
