"""Keeps one predictor replica's loaded versions in line with the rollout controller.

Every few seconds the replica tells the controller what it holds (and what failed to
load) and gets the current :class:`~model.common.protocol.Routing` back. It then loads, validates
and warms every version in ``routing.preload`` on a worker thread, and makes
``routing.blue`` its default once that is loaded. The controller shifts traffic to a
version only after every live replica reports it loaded, so requests for it find it
warm; a replica that has not caught up still answers correctly, loading the version
synchronously under the service's lock (slower, never half-loaded).

No Ray here: the controller call is injected, so this runs in unit tests as is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from model.common.protocol import Routing
from model.common.refs import ModelRef
from model.common.tasks import cancel_and_wait, run_every
from model.service import PredictorService

log = logging.getLogger("model.follower")

# (replica id, loaded version keys, {version key: why it failed to load}) -> routing
SyncCall = Callable[[str, list[str], dict[str, str]], Awaitable[Routing]]


class RoutingFollower:
    def __init__(
        self,
        service: PredictorService,
        sync: SyncCall,
        replica: str,
        *,
        poll_s: float = 2.0,
        call_timeout_s: float = 10.0,
        retry_failed_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self._sync = sync
        self.replica = replica
        self.poll_s = poll_s
        self.call_timeout_s = call_timeout_s
        self.retry_failed_s = retry_failed_s
        self._clock = clock
        self.failed: dict[str, tuple[float, str]] = {}  # key -> (when, why)
        self.routing: Routing | None = None
        self._changed = False  # whether the last exchange (re)loaded anything
        self._task: asyncio.Task[None] | None = None

    def loaded_keys(self) -> list[str]:
        return [ref.key for ref in self.service.versions.refs()]

    async def step(self) -> bool:
        """One exchange with the controller; returns whether anything was (re)loaded."""
        failures = {key: why for key, (_, why) in self.failed.items()}
        async with asyncio.timeout(self.call_timeout_s):  # not wait_for: model.common.tasks
            routing = await self._sync(self.replica, self.loaded_keys(), failures)
        self.routing = routing
        return await self.apply(routing)

    async def apply(self, routing: Routing) -> bool:
        changed = False
        # A failure is news only while the controller asks for that version: once it no
        # longer does (the rollout rolled back, sync refused it), forget it, or it would be
        # reported against the next rollout of the same version, which the controller rolls
        # back from preparing on the spot, before this replica has even tried again.
        wanted = {ref.key for ref in routing.preload}
        if routing.blue is not None:
            wanted.add(routing.blue.key)
        for key in [k for k in self.failed if k not in wanted]:
            del self.failed[key]
        for ref in routing.preload:
            if await self._ensure(ref, self.service.preload):
                changed = True
        # Versions no longer asked for (a rolled-back green) drop to the TTL cache.
        self.service.retain(list(routing.preload))
        blue = routing.blue
        if blue is not None and blue != self.service.default_ref:
            changed = await self._ensure(blue, self.service.promote, always=True) or changed
        return changed

    async def _ensure(
        self, ref: ModelRef, action: Callable[[ModelRef], object], *, always: bool = False
    ) -> bool:
        loaded = {r.key for r in self.service.versions.refs()}
        if ref.key in loaded and not always:
            return False
        failure = self.failed.get(ref.key)
        if failure is not None and self._clock() - failure[0] < self.retry_failed_s:
            return False  # reported as failed; retried later, not on every poll
        try:
            await asyncio.to_thread(action, ref)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            self.failed[ref.key] = (self._clock(), why)
            log.warning("preload_failed", extra={"model": ref.key, "error": why})
            return True  # the failure itself is news for the controller
        self.failed.pop(ref.key, None)
        return True

    async def run(self) -> None:
        await run_every(self._next_poll_s, self._sync_once, log=log, event="follower_loop_failed")

    async def _sync_once(self) -> None:
        try:
            self._changed = await self.step()
        except Exception as exc:  # controller restarting or busy: keep serving as is
            log.warning("routing_sync_failed", extra={"error": type(exc).__name__})
            self._changed = False

    def _next_poll_s(self) -> float:
        # After a change, report at once so the controller can move on without waiting
        # a whole poll interval.
        return 0.0 if self._changed else self.poll_s

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="follower")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
