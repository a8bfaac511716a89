"""Alerts from the rollout controller to ``monitoring_integration.alerting.webhook_url``.

The body is shaped like an Alertmanager webhook notification (version 4), so whatever
already consumes Alertmanager (a paging bridge, Slack relay, an incident tool) can take
it without a new parser. Sending never raises: a monitoring outage must not stop a
rollback. Failures are logged and reported back to the caller as a string.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import structlog

from model.common.refs import ModelRef

log = structlog.get_logger("app.control.alerts")

RECEIVER = "cnnlstm-rollout-controller"
# Alertmanager's "no end time" marker for a firing alert.
_NO_END = "0001-01-01T00:00:00Z"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def alert_payload(
    *,
    alertname: str,
    severity: str,
    summary: str,
    description: str,
    labels: dict[str, str],
    at: float,
    service: str = "cnnlstm",
) -> dict[str, Any]:
    """One firing alert in an Alertmanager-webhook-shaped envelope."""
    all_labels = {"alertname": alertname, "severity": severity, "service": service, **labels}
    fingerprint = hashlib.sha256(
        "\n".join(f"{k}={v}" for k, v in sorted(all_labels.items())).encode()
    ).hexdigest()[:16]
    annotations = {"summary": summary, "description": description}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alertname}"}}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": RECEIVER,
        "groupLabels": {"alertname": alertname},
        "commonLabels": all_labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [
            {
                "status": "firing",
                "labels": all_labels,
                "annotations": annotations,
                "startsAt": _iso(at),
                "endsAt": _NO_END,
                "generatorURL": "",
                "fingerprint": fingerprint,
            }
        ],
    }


class WebhookNotifier:
    def __init__(self, url: str | None, *, enabled: bool = True, timeout_s: float = 3.0) -> None:
        self.url = url if enabled and url else None
        self.timeout_s = timeout_s

    async def send(self, payload: dict[str, Any]) -> str | None:
        """POST ``payload``; None when delivered, else why it was not."""
        if self.url is None:
            return "alerting disabled"
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.post(self.url, json=payload)
            if response.status_code >= 300:
                raise httpx.HTTPStatusError(
                    f"status {response.status_code}", request=response.request, response=response
                )
        except Exception as exc:  # never let monitoring break the rollback it reports
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.warning("alert_webhook_failed", url=self.url, error=why)
            return why
        log.info("alert_sent", url=self.url, alertname=payload["groupLabels"]["alertname"])
        return None


class Notifier(Protocol):
    async def send(self, payload: dict[str, Any]) -> str | None: ...


class AlertOutbox:
    """Fires alerts in the background (a slow webhook must not hold up the control loop)
    and keeps a record of the last one: when, what, and whether it arrived."""

    def __init__(
        self,
        notifier: Notifier | None,
        *,
        on_delivered: Callable[[dict[str, Any]], None],
        clock: Callable[[], float],
    ) -> None:
        self.notifier = notifier
        self._on_delivered = on_delivered
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def fire(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send ``payload``; returns its record, updated in place once delivery ends."""
        record: dict[str, Any] = {"at": self._clock(), "payload": payload, "delivered": None}
        if self.notifier is not None:
            task = asyncio.get_running_loop().create_task(self._deliver(record))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return record

    async def _deliver(self, record: dict[str, Any]) -> None:
        assert self.notifier is not None
        error = await self.notifier.send(record["payload"])
        record.update(delivered=error is None, error=error)
        self._on_delivered(record)

    async def drain(self) -> None:
        """Wait for alerts in flight (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _v(ref: ModelRef | None) -> str:
    return ref.version if ref is not None else ""


def rolled_back_alert(
    model: str, green: ModelRef | None, blue: ModelRef | None, reason: str, at: float
) -> dict[str, Any]:
    return alert_payload(
        alertname="ModelRolloutRolledBack",
        severity="critical",
        summary=f"Rollout of {model}:{_v(green)} rolled back to {_v(blue)}",
        description=reason,
        labels={"model": model, "green_version": _v(green), "blue_version": _v(blue)},
        at=at,
    )


def sync_rejected_alert(
    model: str, version: str, blue: ModelRef | None, reason: str | None, at: float
) -> dict[str, Any]:
    return alert_payload(
        alertname="ModelRegistrySyncRejected",
        severity="warning",
        summary=f"Registry default {model}:{version} refused; {_v(blue)} keeps serving",
        description=reason or "",
        labels={"model": model, "version": version},
        at=at,
    )
