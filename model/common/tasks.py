"""asyncio helpers shared by the gateway (``app/``) and the replicas (``model/``).

Bound an await with ``async with asyncio.timeout(t)``, never ``asyncio.wait_for``: on
CPython 3.11, ``wait_for`` returns the result and drops the cancellation when the awaited
call is already done as a cancel lands, so a background loop built on it can outlive
:func:`cancel_and_wait` and hang a shutdown (a gateway's lifespan did, in a CI run of
session 31; ``tests/unit/test_readiness.py`` provokes that window). ``asyncio.timeout``
runs the call in the same task and keeps the cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class ExceptionLogger(Protocol):
    """What :func:`run_every` logs with: a stdlib ``logging.Logger`` and a structlog
    logger both fit (each has ``exception(event)``, logging at error with the traceback)."""

    def exception(self, event: str, /) -> object: ...


async def run_every(
    period_s: float | Callable[[], float],
    action: Callable[[], Awaitable[object]],
    *,
    log: ExceptionLogger,
    event: str,
) -> None:
    """Run ``action`` forever, sleeping ``period_s`` after each run, until cancelled.

    ``period_s`` may be a callable, asked after each run (a loop that polls faster until
    something is ready, or goes again at once after a change); a period of 0 or less only
    yields to the event loop once before the next run.

    Error policy: an exception from ``action`` (other than ``CancelledError``) is logged
    with ``log.exception(event)`` and the loop carries on after the usual sleep, so one
    bad run never stops a background loop for good. Failures a caller expects (a peer
    restarting) are better caught and logged inside ``action`` at the level they deserve.
    Cancelling the task stops the loop, in the action or in the sleep.
    """
    while True:
        try:
            await action()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(event)
        period = period_s() if callable(period_s) else period_s
        await asyncio.sleep(max(period, 0.0))


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel background loops and wait until each has unwound (``None`` entries skipped).

    A loop that ends with ``CancelledError`` is the expected outcome and is swallowed;
    any other exception it raises while unwinding propagates to the caller.
    """
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    for task in live:
        with contextlib.suppress(asyncio.CancelledError):
            await task
