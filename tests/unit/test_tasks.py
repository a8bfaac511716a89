"""cancel_and_wait (model.common.tasks): loops end, only their cancellation is hidden."""

from __future__ import annotations

import asyncio

import pytest

from model.common.tasks import cancel_and_wait


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
