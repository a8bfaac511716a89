"""asyncio helpers shared by the gateway (``app/``) and the replicas (``model/``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


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
