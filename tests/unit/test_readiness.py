"""The readiness poller: what a failed poll and an explicit "unreachable" do."""

from __future__ import annotations

import asyncio

from app.gateway.readiness import Readiness
from model.common.protocol import PredictorStatus
from tests.fakes import FAKE_REF

READY = PredictorStatus(ready=True, stage="ready", model=FAKE_REF)


async def test_a_ready_predictor_that_stops_answering_calls_on_lost_once() -> None:
    answers: list[PredictorStatus | Exception] = [READY, RuntimeError("died"), RuntimeError("x")]

    async def probe() -> PredictorStatus:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    lost: list[str] = []
    readiness = Readiness(probe, timeout_s=1.0)
    readiness.on_lost = lambda: lost.append(readiness.status.stage)
    assert (await readiness.refresh()).ready
    assert not (await readiness.refresh()).ready
    await readiness.refresh()  # still down: not "lost" again
    assert lost == ["unreachable"]
    assert readiness.model is None


async def test_a_poll_sent_before_mark_unreachable_cannot_undo_it() -> None:
    release = asyncio.Event()

    async def slow_ready() -> PredictorStatus:
        await release.wait()
        return READY

    readiness = Readiness(slow_ready, timeout_s=5.0)
    readiness.status = READY
    stale = asyncio.create_task(readiness.refresh())
    await asyncio.sleep(0)
    readiness.mark_unreachable("no replica answered")
    release.set()
    await stale
    assert not readiness.ready, "the poll that left before the mark is stale"
    assert readiness.status.error == "no replica answered"
    assert (await readiness.refresh()).ready, "a poll sent after the mark counts"


async def test_stop_ends_the_poller_even_when_it_lands_as_a_poll_completes() -> None:
    # CPython 3.11's asyncio.wait_for returns the result and drops the cancellation when
    # the awaited call is already done as the cancel lands: a poller built on it never
    # stopped, and a gateway's shutdown hung (a CI run of tests/api, session 31). Here
    # the stop is started by the probe itself, so it lands in exactly that window.
    readiness: Readiness
    stopping: list[asyncio.Task[None]] = []

    async def probe() -> PredictorStatus:
        if not stopping:
            stopping.append(asyncio.get_running_loop().create_task(readiness.stop()))
        return READY

    readiness = Readiness(probe, timeout_s=1.0)
    readiness.start()
    while not stopping:
        await asyncio.sleep(0)
    done, _ = await asyncio.wait(stopping, timeout=5.0)
    assert done, "stop() never returned: the cancellation was swallowed"
