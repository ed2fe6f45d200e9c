"""Stopping asyncio tasks reliably.

On CPython 3.11, ``asyncio.wait_for`` can drop a cancellation that arrives just as the awaited operation completes
(fixed in 3.12, where ``wait_for`` is built on ``asyncio.timeout``). redis-py sends every command through
``wait_for`` when a socket timeout is set, so a task cancelled while it writes to Redis may carry on as if nothing
happened, and ``task.cancel(); await task`` then waits for ever. :func:`cancel_and_wait` re-cancels until the
tasks are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], every_s: float = 0.1) -> None:
    """Cancel ``tasks`` and wait until every one is done, cancelling again each ``every_s`` those still running.

    >>> async def forever() -> None:
    ...     await asyncio.sleep(3600)
    >>> async def main() -> bool:
    ...     task = asyncio.create_task(forever())
    ...     await cancel_and_wait([task])
    ...     return task.cancelled()
    >>> asyncio.run(main())
    True
    """
    every = list(tasks)
    pending = {task for task in every if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every_s)
    for task in every:  # what they raised on the way out is theirs: retrieved, so asyncio does not log it
        if not task.cancelled():
            task.exception()
