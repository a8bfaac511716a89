"""The rollout controller's state and its JSON file.

One JSON document holds everything the controller must not forget across a restart of
its replica (or of the whole cluster): which version is blue, the rollout in progress and
its step, the counts per step, the history, the last alert, and what registry sync last
saw and refused. Writes are atomic (temporary file, fsync, rename in the same directory),
so a crash leaves either the old document or the new one, never half of one.

The default location is ``<registry>/.rollout/state.json``: the registry volume is the
one every node already shares, and the leading dot keeps the folder out of the registry's
model listings.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.control.shadow_agreement import ShadowTotals
from model.common.artifact import write_atomic
from model.common.refs import ModelRef

log = structlog.get_logger("app.control.rollout_state")

Phase = Literal["idle", "preparing", "shadowing", "shifting", "promoted", "rolled_back", "aborted"]
# Phases in which a rollout owns the routing (a second start is refused meanwhile).
ACTIVE_PHASES: frozenset[str] = frozenset({"preparing", "shadowing", "shifting"})
HISTORY_LIMIT = 200
SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=False)


class StepRecord(_Model):
    """One traffic step: its weight and what the gateways reported while it lasted."""

    index: int
    weight_pct: float
    started_at: float
    ended_at: float | None = None
    green_ok: int = 0
    green_errors: int = 0
    blue_ok: int = 0
    blue_errors: int = 0


class Event(_Model):
    at: float
    event: str
    detail: dict[str, Any] = Field(default_factory=dict)


class Rejection(_Model):
    version: str
    sha256: str | None = None
    reason: str
    at: float


class SyncState(_Model):
    """Registry sync (spec 11.1): the DEFAULT pointer as last acted on, and its outcome."""

    last_check_at: float = 0.0
    last_seen: str | None = None  # "<version>:<sha256>" the pointer named when last acted on
    pending: ModelRef | None = None  # validated, waiting for every predictor to load it
    pending_since: float | None = None
    rejected: Rejection | None = None
    last_synced: ModelRef | None = None
    last_synced_at: float | None = None


class RolloutState(_Model):
    schema_version: int = SCHEMA_VERSION
    model: str
    blue: ModelRef | None = None
    green: ModelRef | None = None
    phase: Phase = "idle"
    green_weight_pct: float = 0.0
    step_index: int = -1
    step_started_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    reason: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    # The shadow phase: how long it lasts for this rollout, when it began, what it saw.
    shadow_s: float = 0.0
    shadow_started_at: float | None = None
    shadow: ShadowTotals = Field(default_factory=ShadowTotals)
    history: list[Event] = Field(default_factory=list)
    last_alert: dict[str, Any] | None = None
    sync: SyncState = Field(default_factory=SyncState)
    revision: int = 0

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    def record(self, at: float, event: str, **detail: Any) -> None:
        self.history.append(Event(at=at, event=event, detail=detail))
        del self.history[:-HISTORY_LIMIT]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def default_state_path(registry_root: Path) -> Path:
    return Path(registry_root) / ".rollout" / "state.json"


class RolloutStore:
    """Load and save :class:`RolloutState` at ``path`` (atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self, model: str) -> RolloutState | None:
        """The saved state for ``model``, or None (no file, another model, unreadable).

        An unreadable file is moved aside, not deleted: it is evidence for whoever
        investigates, and the controller starts from the registry's default instead.
        """
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            state = RolloutState.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                self.path.replace(aside)
            log.error(
                "rollout_state_unreadable",
                path=str(self.path),
                moved_to=str(aside),
                error=str(exc)[:300],
            )
            return None
        if state.model != model:
            log.warning("rollout_state_for_another_model", saved=state.model, serving=model)
            return None
        return state

    def save(self, state: RolloutState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(state.to_json(), indent=2, sort_keys=True)
        write_atomic(self.path, text.encode(), mode=0o600)


COUNTS_FLUSH_S = 5.0  # per-step counts reach the state file at most this often


class StateKeeper:
    """The rollout state on disk: every decision saved at once (its revision bumped),
    counts that merely accumulate at most every ``COUNTS_FLUSH_S``. A failed save keeps
    controlling traffic; the next change or flush tries again."""

    def __init__(self, state: RolloutState, store: RolloutStore | None) -> None:
        self.state = state
        self.store = store
        self.dirty = False  # something changed that is not on disk yet
        self._saved_at = 0.0

    def changed(self, now: float) -> None:
        self.state.revision += 1
        self.save(now)

    def flush_if_due(self, now: float) -> None:
        if self.dirty and now - self._saved_at >= COUNTS_FLUSH_S:
            self.save(now)

    def save(self, now: float) -> None:
        self.dirty = False
        self._saved_at = now
        if self.store is None:
            return
        try:
            self.store.save(self.state)
        except OSError as exc:
            self.dirty = True
            log.error("rollout_state_save_failed", path=str(self.store.path), error=str(exc))
