"""model.common.tasks: cancel_and_wait ends loops and hides only their cancellation;
run_every keeps a loop going through failures, logs them, and stops when cancelled."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator

import pytest
import structlog

from model.common.tasks import cancel_and_wait, run_every


async def _forever(unwound: list[str], name: str) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        unwound.append(name)


async def test_every_task_is_cancelled_and_has_unwound_when_it_returns() -> None:
    unwound: list[str] = []
    a = asyncio.create_task(_forever(unwound, "a"))
    b = asyncio.create_task(_forever(unwound, "b"))
    await asyncio.sleep(0)
    await cancel_and_wait(a, None, b)
    assert sorted(unwound) == ["a", "b"]
    assert a.cancelled()
    assert b.cancelled()


async def test_an_error_raised_while_unwinding_is_not_swallowed() -> None:
    async def broken() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("cleanup failed")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(task)


class _Recorder:
    """A logger with only ``exception``: what run_every needs from one."""

    def __init__(self) -> None:
        self.events: list[tuple[str, BaseException | None]] = []

    def exception(self, event: str) -> None:
        self.events.append((event, sys.exc_info()[1]))


def _counting(
    until: int, fail_on: frozenset[int] = frozenset()
) -> tuple[list[int], asyncio.Event, Callable[[], Awaitable[None]]]:
    calls: list[int] = []
    reached = asyncio.Event()

    async def action() -> None:
        calls.append(len(calls) + 1)
        if len(calls) >= until:
            reached.set()
        if len(calls) in fail_on:
            raise RuntimeError(f"run {len(calls)} failed")

    return calls, reached, action


async def test_run_every_keeps_going_after_a_failure_and_logs_it() -> None:
    log = _Recorder()
    calls, reached, action = _counting(until=4, fail_on=frozenset({1, 3}))
    task = asyncio.create_task(run_every(0.0, action, log=log, event="loop_failed"))
    await asyncio.wait_for(reached.wait(), 5.0)
    await cancel_and_wait(task)
    assert len(calls) >= 4
    assert [event for event, _ in log.events] == ["loop_failed", "loop_failed"]
    assert [str(exc) for _, exc in log.events] == ["run 1 failed", "run 3 failed"]


async def test_run_every_stops_when_cancelled_in_the_sleep_or_in_the_action() -> None:
    log = _Recorder()
    calls, reached, action = _counting(until=1)
    sleeping = asyncio.create_task(run_every(3600.0, action, log=log, event="x"))
    await asyncio.wait_for(reached.wait(), 5.0)
    await cancel_and_wait(sleeping)
    assert sleeping.cancelled()
    assert calls == [1]

    started = asyncio.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.Event().wait()

    acting = asyncio.create_task(run_every(0.0, stuck, log=log, event="x"))
    await asyncio.wait_for(started.wait(), 5.0)
    await cancel_and_wait(acting)
    assert acting.cancelled()
    assert log.events == []  # a cancellation is not a failure


async def test_run_every_asks_a_callable_period_after_each_run() -> None:
    periods: Iterator[float] = iter([0.0, 0.0, 3600.0])
    asked: list[int] = []
    calls, reached, action = _counting(until=3)

    def period() -> float:
        asked.append(len(calls))
        return next(periods)

    task = asyncio.create_task(run_every(period, action, log=_Recorder(), event="x"))
    await asyncio.wait_for(reached.wait(), 5.0)
    await asyncio.sleep(0.05)  # room for a fourth run, were the last period not honoured
    await cancel_and_wait(task)
    assert calls == [1, 2, 3]
    assert asked == [1, 2, 3]


async def test_run_every_logs_through_stdlib_and_structlog_loggers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom() -> None:
        raise ValueError("boom")

    stdlib = logging.getLogger("tests.tasks")
    with caplog.at_level(logging.ERROR, logger="tests.tasks"):
        task = asyncio.create_task(run_every(3600.0, boom, log=stdlib, event="stdlib_failed"))
        await asyncio.sleep(0.01)
        await cancel_and_wait(task)
    [record] = [r for r in caplog.records if r.name == "tests.tasks"]
    assert record.getMessage() == "stdlib_failed"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)

    with structlog.testing.capture_logs() as logs:
        slog = structlog.get_logger("tests.tasks")
        task = asyncio.create_task(run_every(3600.0, boom, log=slog, event="structlog_failed"))
        await asyncio.sleep(0.01)
        await cancel_and_wait(task)
    assert [(e["event"], e["log_level"]) for e in logs] == [("structlog_failed", "error")]
