"""Registry sync (spec 11.1): follow the registry's DEFAULT pointer for the served model.

Every ``model_registry.sync_interval_s`` the rollout controller scans the registry. When
the pointer names a version other than the one in service, that version is checked
(manifest and weights checksum here; the golden-output check on a predictor, since it
needs torch) and, if it passes, *staged*: predictors preload it, and only once every live
replica holds it warm does it become the version in service. Until then, and for good if
it fails, the old version keeps serving. A refused version is remembered (by version and
weights hash), so it is not re-checked every interval; moving the pointer again retries.

Moving DEFAULT switches all traffic at once (after validation); ``cnnlstm rollout start``
is the gradual path. Sync never runs while a rollout is in progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from app.control.alerts import sync_rejected_alert
from app.control.predictor_fleet import PredictorFleet
from app.control.rollout_state import Rejection, RolloutState
from model.common.errors import RegistryError
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry

log = structlog.get_logger("app.control.registry_sync")

# A ref -> None when a predictor could load and validate it, else why not.
Validator = Callable[[ModelRef], Awaitable[str | None]]
RunBlocking = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class SyncOutcome:
    kind: Literal["staged", "synced", "rejected"]
    version: str
    reason: str | None = None
    previous: str | None = None

    def record(self, state: RolloutState, now: float) -> dict[str, Any] | None:
        """Enter this outcome in the state's history; the alert to send, for a rejection."""
        detail = {"version": self.version, "previous": self.previous}
        state.record(now, f"sync_{self.kind}", reason=self.reason, **detail)
        if self.kind != "rejected":
            return None
        return sync_rejected_alert(state.model, self.version, state.blue, self.reason, now)


def bounded_validator(validator: Validator | None, timeout_s: float) -> Validator:
    """``validator`` given ``timeout_s`` to answer (None: every version passes); a predictor
    that cannot answer in time, or at all, cannot vouch for the version."""

    async def validate(ref: ModelRef) -> str | None:
        if validator is None:
            return None
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: see model.common.tasks
                return await validator(ref)
        except Exception as exc:
            return f"validation did not complete: {type(exc).__name__}: {exc}"

    return validate


class RegistrySync:
    def __init__(
        self,
        registry: ModelRegistry,
        *,
        interval_s: float,
        validation_enabled: bool,
        preload_timeout_s: float,
        validator: Validator | None,
        run_blocking: RunBlocking,
    ) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self.validation_enabled = validation_enabled
        self.preload_timeout_s = preload_timeout_s
        self.validator = validator
        self._run_blocking = run_blocking

    def bootstrap(self, state: RolloutState, now: float) -> bool:
        """No blue yet (first start, an empty registry): take the registry's default.
        Returns whether it found one."""
        try:
            ref = self.registry.resolve(state.model)
        except RegistryError:
            return False  # nothing published yet; the next tick looks again
        state.blue = ref
        state.sync.last_seen = f"{ref.version}:{ref.sha256}"
        state.record(now, "bootstrap", version=ref.version)
        log.info("rollout_bootstrap", blue=ref.key)
        return True

    def due(self, state: RolloutState, now: float) -> bool:
        return (
            not state.active
            and state.sync.pending is None
            and now - state.sync.last_check_at >= self.interval_s
        )

    async def check(self, state: RolloutState, now: float) -> SyncOutcome | None:
        """Look at the pointer; stage or refuse a new version. None when nothing moved."""
        sync = state.sync
        sync.last_check_at = now
        name = state.model
        try:
            snapshot = await self._run_blocking(self.registry.snapshot)
            pointer = self.registry.default_version(name)
        except RegistryError as exc:
            log.warning("registry_scan_failed", error=str(exc)[:300])
            return None
        versions: dict[str, str] = snapshot.get(name, {})
        if pointer is None:
            if not versions:
                return None
            pointer = list(versions)[-1]  # no pointer: the newest, as resolve() does
        sha = versions.get(pointer)
        seen = f"{pointer}:{sha or 'unreadable'}"
        blue = state.blue
        if blue is not None and (blue.version, blue.sha256) == (pointer, sha):
            sync.last_seen = seen
            return None
        if seen == sync.last_seen:
            return None  # already acted on (refused, or rolled away from)
        sync.last_seen = seen
        if sha is None:
            return self._reject(
                state, pointer, None, now, "DEFAULT names a version that is missing or unreadable"
            )
        ref = ModelRef(name=name, version=pointer, sha256=sha)
        why = await self._validate(ref)
        if why is not None:
            return self._reject(state, pointer, sha, now, why)
        sync.pending = ref
        sync.pending_since = now
        log.info("registry_sync_staged", model=ref.key)
        return SyncOutcome("staged", pointer, previous=blue.version if blue else None)

    async def _validate(self, ref: ModelRef) -> str | None:
        try:
            manifest = await self._run_blocking(self.registry.verify, ref.name, ref.version)
        except RegistryError as exc:
            return f"{type(exc).__name__}: {exc}"
        if manifest.weights_sha256 != ref.sha256:
            return "the weights changed while being checked"
        if self.validation_enabled and self.validator is not None:
            return await self.validator(ref)
        return None

    def advance(self, state: RolloutState, fleet: PredictorFleet, now: float) -> SyncOutcome | None:
        """Switch to the staged version once every live predictor holds it."""
        sync = state.sync
        pending = sync.pending
        if pending is None:
            return None
        failure = fleet.failure(pending.key, now)
        if failure is not None:
            return self._reject(state, pending.version, pending.sha256, now, failure)
        if fleet.all_loaded(pending.key, now):
            previous = state.blue.version if state.blue else None
            state.blue = pending
            sync.last_synced = pending
            sync.last_synced_at = now
            sync.pending = sync.pending_since = None
            log.info("registry_sync_switched", model=pending.key, previous=previous)
            return SyncOutcome("synced", pending.version, previous=previous)
        if now - (sync.pending_since or now) > self.preload_timeout_s:
            return self._reject(
                state,
                pending.version,
                pending.sha256,
                now,
                f"not loaded on every predictor within {self.preload_timeout_s:g}s",
            )
        return None

    def _reject(
        self, state: RolloutState, version: str, sha: str | None, now: float, reason: str
    ) -> SyncOutcome:
        sync = state.sync
        sync.pending = sync.pending_since = None
        sync.rejected = Rejection(version=version, sha256=sha, reason=reason, at=now)
        log.error("registry_sync_rejected", model=state.model, version=version, reason=reason)
        return SyncOutcome("rejected", version, reason=reason)
