"""Why a rollout may not start: checked before any predictor loads green (spec 9.2)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from app.control.registry_sync import RunBlocking
from app.control.rollout_settings import RolloutSettings
from app.control.rollout_state import RolloutState
from model.common.errors import RegistryError
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry


async def refuse_start(
    s: RolloutState,
    settings: RolloutSettings,
    registry: ModelRegistry,
    name: str,
    version: str,
    *,
    run_blocking: RunBlocking,
    validate: Callable[[ModelRef], Awaitable[str | None]],
) -> str | ModelRef:
    """The reason to refuse a rollout of ``name:version``, or the version to roll out
    (it exists, its checksums verify, it is not blue, and a predictor validated it)."""
    if not settings.enabled:
        return "blue-green deployment is disabled (blue_green_deployment.enabled)"
    if name != s.model:
        return f"this deployment serves {s.model!r}; cannot roll out {name!r}"
    if s.active:
        green = s.green.version if s.green else None
        return f"a rollout of {green} is already {s.phase}; abort it first"
    if s.sync.pending is not None:
        return f"registry sync is switching to {s.sync.pending.version}; retry shortly"
    if s.blue is None:
        return "no version is in service yet"
    try:
        ref = registry.resolve(name, version)
        await run_blocking(registry.verify, name, version)
    except RegistryError as exc:
        return f"{name}:{version} cannot be rolled out: {exc}"
    if ref == s.blue:
        return f"{name}:{version} is already in service"
    if settings.validation_enabled:
        failure = await validate(ref)
        if failure is not None:
            return f"{name}:{version} failed validation on a predictor: {failure}"
    return ref
