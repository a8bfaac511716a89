"""The rollback alert reaches a real HTTP receiver on 127.0.0.1 in an
Alertmanager-webhook shape; an unreachable webhook is reported, never raised."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.control.alerts import WebhookNotifier, rolled_back_alert
from app.control.rollout_engine import RolloutEngine
from model.common.refs import ModelRef
from tests.support.webhook import WebhookReceiver, webhook_receiver
from tests.unit.ops.rollout_support import (
    MODEL,
    artifact_source,  # noqa: F401  (fixture)
    make_rig,
    registry_root,  # noqa: F401  (fixture)
    run_now,
)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as hook:
        yield hook


def test_payload_is_shaped_like_an_alertmanager_webhook() -> None:
    green = ModelRef(MODEL, "2.0.0", "b" * 64)
    blue = ModelRef(MODEL, "1.0.0", "a" * 64)
    payload = rolled_back_alert(MODEL, green, blue, "green error rate 10%", 1_700_000_000.0)
    assert payload["version"] == "4"
    assert payload["status"] == "firing"
    [alert] = payload["alerts"]
    assert alert["labels"] == {
        "alertname": "ModelRolloutRolledBack",
        "severity": "critical",
        "service": "cnnlstm",
        "model": MODEL,
        "green_version": "2.0.0",
        "blue_version": "1.0.0",
    }
    assert alert["annotations"]["description"] == "green error rate 10%"
    assert alert["startsAt"].startswith("2023-11-14T22:13:20")
    assert payload["commonLabels"] == alert["labels"]


async def test_rollback_posts_the_alert_to_the_webhook(
    receiver: WebhookReceiver,
    registry_root: Path,  # noqa: F811
) -> None:
    url, received = receiver.url, receiver.received
    rig = make_rig(registry_root)
    engine = RolloutEngine(
        rig.settings,
        rig.registry,
        store=rig.store,
        validator=rig.validator,
        notifier=WebhookNotifier(url, timeout_s=5.0),
        clock=rig.clock,
        run_blocking=run_now,
    )
    await engine.start(MODEL, "2.0.0")
    engine.predictor_sync("r1", [rig.ref("1.0.0").key, rig.ref("2.0.0").key], {})
    await engine.tick()
    engine.report({rig.ref("2.0.0").key: (80, 20)})
    await engine.tick()
    await engine.alerts.drain()
    [payload] = received
    assert payload["alerts"][0]["labels"]["alertname"] == "ModelRolloutRolledBack"
    assert "20.0%" in payload["alerts"][0]["annotations"]["description"]
    assert engine.state.last_alert is not None
    assert engine.state.last_alert["delivered"] is True
    # The delivery outcome reaches the state file too.
    saved = json.loads(rig.store.path.read_text())
    assert saved["last_alert"]["delivered"] is True


async def test_an_unreachable_webhook_is_reported_not_raised() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    notifier = WebhookNotifier(f"http://127.0.0.1:{port}/", timeout_s=1.0)
    why = await notifier.send({"groupLabels": {"alertname": "X"}})
    assert why is not None
    assert "ConnectError" in why


async def test_disabled_alerting_sends_nothing() -> None:
    notifier = WebhookNotifier("http://127.0.0.1:1/", enabled=False)
    assert await notifier.send({}) == "alerting disabled"
