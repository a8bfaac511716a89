"""Blue/green rollout and registry sync as one state machine, without Ray (spec 9.2, 11.1).

Phases: ``idle`` -> ``preparing`` (every predictor loads, validates and warms green) ->
``shadowing`` (if the rollout has a shadow phase: green scores a sample of blue's rows off
the response path and must agree with blue, :mod:`app.control.shadow_agreement`) ->
``shifting`` (green gets ``traffic_steps_pct[i]`` % of the requests that name no version,
one step per ``traffic_shift_interval_s``) -> ``promoted`` (the registry's DEFAULT names
green, the new blue). Or ``rolled_back`` (green failed to load, its error rate over
``health_check_duration_s`` passed ``rollback_threshold_pct`` with ``min_samples``
requests, or a shadow gate failed; an alert goes out) or ``aborted`` (an operator): the
routing returns to blue at once. ``RolloutController`` runs this in a Serve replica; the
unit tests drive it with a fake clock, reports and validator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from app.control.alerts import AlertOutbox, Notifier, rolled_back_alert
from app.control.outcome_window import TrafficHealth
from app.control.predictor_fleet import PredictorFleet
from app.control.registry_sync import (
    RegistrySync,
    RunBlocking,
    SyncOutcome,
    Validator,
    bounded_validator,
)
from app.control.rollout_settings import RolloutSettings
from app.control.rollout_state import RolloutState, RolloutStore, StateKeeper, StepRecord
from app.control.rollout_view import routing_of, shadowed, status_view
from app.control.shadow_agreement import ShadowTotals
from app.control.start_checks import refuse_start
from model.common.errors import RegistryError
from model.common.protocol import Routing
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry

log = structlog.get_logger("app.ops.rollout")


class RolloutEngine:
    def __init__(
        self,
        settings: RolloutSettings,
        registry: ModelRegistry,
        *,
        store: RolloutStore | None = None,
        validator: Validator | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        run_blocking: RunBlocking = asyncio.to_thread,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self._validate = bounded_validator(validator, settings.preload_timeout_s)
        self.clock = clock
        self._run_blocking = run_blocking
        self.fleet = PredictorFleet(settings.predictor_stale_s)
        self.sync = RegistrySync(
            registry,
            interval_s=settings.sync_interval_s,
            validation_enabled=settings.validation_enabled,
            preload_timeout_s=settings.preload_timeout_s,
            validator=self._validate,
            run_blocking=run_blocking,
        )
        self.health = TrafficHealth(settings)
        self._lock = asyncio.Lock()  # start, abort and each tick change phases one at a time
        self.alerts = AlertOutbox(notifier, on_delivered=self._alert_delivered, clock=clock)
        loaded = store.load(settings.model) if store is not None else None
        self.state = loaded or RolloutState(model=settings.model)
        self.keeper = StateKeeper(self.state, store)
        if loaded is not None:
            log.info("rollout_state_restored", phase=loaded.phase, blue=_key(loaded.blue))
        self._bootstrap(self.clock())

    # -- reads (cheap: every gateway and predictor calls these every second or two) ----

    def routing(self) -> Routing:
        return routing_of(self.state, self.settings)

    def predictor_sync(self, replica: str, loaded: list[str], failed: dict[str, str]) -> Routing:
        self.fleet.update(replica, loaded, failed, self.clock())
        return self.routing()

    def report(self, counts: Mapping[str, Sequence[int]]) -> None:
        """Per-version ``{ref.key: (ok, errors)}`` from one gateway since its last report."""
        if self.health.record(self.state, counts, self.clock()):
            self.keeper.dirty = True

    def report_shadow(self, green_key: str, report: Mapping[str, float]) -> None:
        """One gateway's shadow comparisons of ``green_key`` since its last report."""
        s = self.state
        if shadowed(self.state) and s.green is not None and green_key == s.green.key:
            s.shadow.add(report)
            self.keeper.dirty = True

    def status(self) -> dict[str, Any]:
        now = self.clock()
        return status_view(self.state, self.settings, self.health, self.fleet, now)

    # -- commands ----------------------------------------------------------------------

    async def start(self, name: str, version: str, shadow_s: float | None = None) -> dict[str, Any]:
        """Roll ``name:version`` out; ``shadow_s`` overrides the configured shadow phase."""
        async with self._lock:
            why = await refuse_start(
                self.state,
                self.settings,
                self.registry,
                name,
                version,
                run_blocking=self._run_blocking,
                validate=self._validate,
            )
            if isinstance(why, str):
                log.warning("rollout_refused", model=name, version=version, reason=why)
                return self._answer(why)
            now = self.clock()
            s = self.state
            s.green, s.phase, s.green_weight_pct = why, "preparing", 0.0
            s.step_index, s.step_started_at, s.steps = -1, None, []
            s.started_at, s.finished_at, s.reason = now, None, None
            s.shadow_s = self.settings.shadow.duration_s if shadow_s is None else shadow_s
            s.shadow_started_at, s.shadow = None, ShadowTotals()
            self.health.green.clear()
            s.record(now, "started", version=version, blue=_version(s.blue))
            log.info("rollout_started", green=why.key, blue=_key(s.blue))
            self.keeper.changed(self.clock())
            return self._answer(None)

    async def abort(self, reason: str = "aborted by an operator") -> dict[str, Any]:
        async with self._lock:
            s = self.state
            if not s.active:
                return self._answer("no rollout in progress")
            now = self.clock()
            green = s.green
            self._finish(now, "aborted", reason)
            s.record(now, "aborted", version=_version(green), reason=reason)
            self.keeper.changed(self.clock())
            return self._answer(None)

    def _answer(self, refused: str | None) -> dict[str, Any]:
        return {"accepted": refused is None, "reason": refused, "status": self.status()}

    # -- the control loop --------------------------------------------------------------

    async def tick(self) -> None:
        """One pass of the control loop (the controller calls this every ~0.5 s)."""
        async with self._lock:
            now = self.clock()
            self._bootstrap(now)
            if self.state.phase == "preparing":
                self._advance_preparing(now)
            elif self.state.phase == "shadowing":
                self._advance_shadowing(now)
            elif self.state.phase == "shifting":
                await self._advance_shifting(now)
            self._on_sync(self.sync.advance(self.state, self.fleet, now))
            if self.state.blue is not None and self.sync.due(self.state, now):
                self._on_sync(await self.sync.check(self.state, now))
                self.keeper.dirty = True  # last_check_at moved
            self.keeper.flush_if_due(now)

    def _advance_preparing(self, now: float) -> None:
        s = self.state
        assert s.green is not None
        failure = self.fleet.failure(s.green.key, now)
        if failure is not None:
            self._roll_back(now, f"green could not be loaded on a predictor: {failure}")
        elif self.fleet.all_loaded(s.green.key, now):
            if s.shadow_s > 0:
                s.phase, s.shadow_started_at = "shadowing", now
                s.record(now, "shadowing", duration_s=s.shadow_s)
                log.info("rollout_shadowing", green=s.green.key, duration_s=s.shadow_s)
                self.keeper.changed(self.clock())
            else:
                self._begin_step(0, now)
        elif now - (s.started_at or now) > self.settings.preload_timeout_s:
            self._roll_back(
                now,
                f"green was not loaded on every predictor within "
                f"{self.settings.preload_timeout_s:g}s",
            )

    def _advance_shadowing(self, now: float) -> None:
        s, gates = self.state, self.settings.shadow
        stop = gates.verdict(s.shadow)
        elapsed = now - (s.shadow_started_at or now)
        if stop is not None:
            self._roll_back(now, stop)
        elif elapsed >= s.shadow_s and gates.enough(s.shadow):
            self._begin_step(0, now)
        elif elapsed >= 4 * s.shadow_s:
            self._roll_back(
                now,
                f"not enough shadow traffic: {s.shadow.scored} of {gates.min_samples} rows "
                f"compared in {elapsed:.0f}s",
            )

    async def _advance_shifting(self, now: float) -> None:
        s = self.state
        unhealthy = self.health.rollback_reason(now)
        if unhealthy is None and shadowed(self.state):
            unhealthy = self.settings.shadow.verdict(s.shadow)
        if unhealthy is not None:
            self._roll_back(now, unhealthy)
            return
        if now - (s.step_started_at or now) < self.settings.shift_interval_s:
            return
        if s.step_index + 1 < len(self.settings.steps_pct):
            self._begin_step(s.step_index + 1, now)
        else:
            await self._promote(now)

    def _begin_step(self, index: int, now: float) -> None:
        s = self.state
        if index == 0:
            self.health.green.clear()
        if s.steps and s.steps[-1].ended_at is None:
            s.steps[-1].ended_at = now
        weight = self.settings.steps_pct[index]
        s.phase, s.step_index, s.green_weight_pct = "shifting", index, weight
        s.step_started_at = now
        s.steps.append(StepRecord(index=index, weight_pct=weight, started_at=now))
        s.record(now, "step", index=index, weight_pct=weight)
        log.info("rollout_step", green=_key(s.green), weight_pct=weight)
        self.keeper.changed(self.clock())

    async def _promote(self, now: float) -> None:
        s = self.state
        green, old = s.green, s.blue
        assert green is not None
        try:
            await self._run_blocking(self.registry.set_default, green.name, green.version)
        except (RegistryError, OSError) as exc:
            self._roll_back(now, f"could not point the registry's DEFAULT at green: {exc}")
            return
        self._finish(now, "promoted", None)
        s.blue = green
        # The pointer names green now because we moved it: not news for registry sync.
        s.sync.last_seen = f"{green.version}:{green.sha256}"
        s.record(now, "promoted", version=green.version, previous=_version(old))
        log.info("rollout_promoted", model=green.key, previous=_key(old))
        self.keeper.changed(self.clock())

    def _roll_back(self, now: float, reason: str) -> None:
        s = self.state
        green, blue = s.green, s.blue
        self._finish(now, "rolled_back", reason)
        s.record(now, "rolled_back", version=_version(green), reason=reason)
        log.error("rollout_rolled_back", green=_key(green), blue=_key(blue), reason=reason)
        self._alert(rolled_back_alert(s.model, green, blue, reason, now))
        self.keeper.changed(self.clock())

    def _finish(self, now: float, phase: str, reason: str | None) -> None:
        s = self.state
        s.phase = phase  # type: ignore[assignment]  # one of the Phase literals
        s.green, s.green_weight_pct, s.step_started_at = None, 0.0, None
        s.finished_at, s.reason = now, reason
        if s.steps and s.steps[-1].ended_at is None:
            s.steps[-1].ended_at = now

    # -- registry sync -----------------------------------------------------------------

    def _bootstrap(self, now: float) -> None:
        if self.state.blue is None and self.sync.bootstrap(self.state, now):
            self.keeper.changed(self.clock())

    def _on_sync(self, outcome: SyncOutcome | None) -> None:
        if outcome is not None:
            alert = outcome.record(self.state, self.clock())
            if alert is not None:
                self._alert(alert)
            self.keeper.changed(self.clock())

    # -- alerts ----------------------------------------------------------------------

    def _alert(self, payload: dict[str, Any]) -> None:
        self.state.last_alert = self.alerts.fire(payload)

    def _alert_delivered(self, record: dict[str, Any]) -> None:
        if self.state.last_alert is record:
            self.keeper.save(self.clock())


def _key(ref: ModelRef | None) -> str | None:
    return ref.key if ref is not None else None


def _version(ref: ModelRef | None) -> str | None:
    return ref.version if ref is not None else None
