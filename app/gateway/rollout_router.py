"""The gateway's half of blue/green: pick a version per request, count how each did.

A background task polls the rollout controller's ``routing()`` (never per request: the
hot path reads one attribute). Requests that name no version go to green with probability
``green_weight_pct / 100``, else to blue. Requests naming a version bypass this. Every
outcome is counted per version in-process and pushed to the controller about once a
second, with the shadow comparisons of green (``app.gateway.shadow``); the controller
judges green's error rate and agreement from those.

When the controller cannot be reached for a while (its replica restarting), the router
keeps the last routing it saw for ``stale_after_s`` and then sends everything to blue: a
rollout nobody is watching must not keep sending traffic to green.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from model.common.protocol import Routing
from model.common.refs import ModelRef
from model.common.tasks import cancel_and_wait, run_every

log = structlog.get_logger("app.gateway.rollout_router")

FetchRouting = Callable[[], Awaitable[Routing]]
PushCounts = Callable[[dict[str, tuple[int, int]]], Awaitable[None]]
# One green's shadow comparisons (``app.gateway.shadow.ShadowTally.as_report``).
PushShadow = Callable[[str, dict[str, float]], Awaitable[None]]
ShadowSource = Callable[[], dict[str, dict[str, float]]]
OnChange = Callable[[Routing], None]


class RolloutRouter:
    def __init__(
        self,
        fetch: FetchRouting,
        push: PushCounts,
        *,
        poll_s: float = 0.5,
        report_s: float = 1.0,
        stale_after_s: float = 15.0,
        call_timeout_s: float = 5.0,
        rng: random.Random | None = None,
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.monotonic,
        push_shadow: PushShadow | None = None,
    ) -> None:
        self._fetch = fetch
        self._push = push
        self._push_shadow = push_shadow
        # Where shadow tallies come from (the gateway's ShadowScorer.take), and reports
        # not delivered yet (kept for the next try, like the outcome counts).
        self.shadow_source: ShadowSource | None = None
        self._shadow_pending: dict[str, dict[str, float]] = {}
        self.poll_s = poll_s
        self.report_s = report_s
        self.stale_after_s = stale_after_s
        self.call_timeout_s = call_timeout_s
        self._rng = rng or random.Random()
        self._on_change = on_change
        self._clock = clock
        self.routing: Routing | None = None
        self.fetched_at: float | None = None
        self.last_error: str | None = None
        self._counts: dict[str, list[int]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- hot path ----------------------------------------------------------------------

    def pick(self, fallback: ModelRef) -> ModelRef:
        """The version for a request that names none. ``fallback`` (the predictor's own
        default) answers until the controller has said anything."""
        routing = self.routing
        if routing is None or routing.blue is None:
            return fallback
        green, weight = routing.green, routing.green_weight_pct
        if green is not None and weight > 0 and not self._stale():
            return green if self._rng.random() * 100.0 < weight else routing.blue
        return routing.blue

    def record(self, ref: ModelRef, ok: bool) -> None:
        counts = self._counts.get(ref.key)
        if counts is None:
            counts = self._counts[ref.key] = [0, 0]
        counts[0 if ok else 1] += 1

    def _stale(self) -> bool:
        return self.fetched_at is None or self._clock() - self.fetched_at > self.stale_after_s

    # -- background --------------------------------------------------------------------

    async def refresh(self) -> Routing | None:
        try:
            async with asyncio.timeout(self.call_timeout_s):  # not wait_for: model.common.tasks
                routing = await self._fetch()
        except Exception as exc:  # controller restarting: keep the last routing a while
            self.last_error = type(exc).__name__
            return self.routing
        self.fetched_at = self._clock()
        self.last_error = None
        previous, self.routing = self.routing, routing
        if routing != previous:
            log.info(
                "routing_changed",
                phase=routing.phase,
                blue=routing.blue.key if routing.blue else None,
                green=routing.green.key if routing.green else None,
                green_weight_pct=routing.green_weight_pct,
            )
            if self._on_change is not None:
                self._on_change(routing)
        return routing

    async def flush(self) -> None:
        """Push the counts and shadow comparisons gathered since the last push (kept for
        the next try on failure)."""
        await self._flush_counts()
        await self._flush_shadow()

    async def _flush_shadow(self) -> None:
        if self.shadow_source is None or self._push_shadow is None:
            return
        for key, report in self.shadow_source().items():
            pending = self._shadow_pending.setdefault(key, dict.fromkeys(report, 0.0))
            for name, value in report.items():
                pending[name] = pending.get(name, 0.0) + value
        for key in list(self._shadow_pending):
            try:
                async with asyncio.timeout(self.call_timeout_s):
                    await self._push_shadow(key, self._shadow_pending[key])
            except Exception as exc:
                self.last_error = type(exc).__name__
                return
            del self._shadow_pending[key]

    async def _flush_counts(self) -> None:
        if not self._counts:
            return
        counts, self._counts = self._counts, {}
        payload = {key: (ok, err) for key, (ok, err) in counts.items()}
        try:
            async with asyncio.timeout(self.call_timeout_s):
                await self._push(payload)
        except Exception as exc:
            self.last_error = type(exc).__name__
            for key, (ok, err) in payload.items():
                mine = self._counts.setdefault(key, [0, 0])
                mine[0] += ok
                mine[1] += err

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            event = "rollout_router_loop_failed"
            self._tasks = [
                loop.create_task(
                    run_every(self.poll_s, self.refresh, log=log, event=event), name="routing-poll"
                ),
                loop.create_task(
                    run_every(self.report_s, self.flush, log=log, event=event),
                    name="routing-report",
                ),
            ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.flush()  # the last second's outcomes still count

    def view(self) -> dict[str, Any]:
        """For ``/stats``: the routing this gateway applies and how fresh it is."""
        routing = self.routing
        out: dict[str, Any] = routing.to_json() if routing else {"phase": None}
        out["state"] = routing.phase if routing else None
        out["age_s"] = (
            round(self._clock() - self.fetched_at, 3) if self.fetched_at is not None else None
        )
        out["stale"] = self._stale()
        out["last_error"] = self.last_error
        return out
