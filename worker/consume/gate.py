"""How many jobs one worker process delivers at once, the urgent ones let through first.

A worker process holds many task messages at a time (worker/consume/stream.py): up to
``MAILDISPATCH_WORKER_PREFETCH`` messages of up to ``MAILDISPATCH_BATCH_SIZE`` jobs each. Its jobs
pass this gate before their claim, at most ``MAILDISPATCH_WORKER_JOBS`` at once, so that jobs not
started yet stay ``queued`` (a dead worker's are republished as they are, not as uncertain) and
a single send taken while a bulk backlog drains is not queued behind thousands of bulk jobs
waiting for a connection: lower priority numbers pass first, then first come, first served.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any


class GateClosed(Exception):
    """The worker is shutting down: a job not started yet is handed back, not delivered."""


class Gate:
    """A semaphore whose waiters are served by (priority, arrival).

    Also a plain FIFO semaphore (``async with gate:``) where many wait: asyncio's own looks
    through all its waiters at every acquire (``Semaphore.locked`` in Python 3.11).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.closed = False

    @property
    def waiting(self) -> int:
        """Jobs waiting at the gate."""
        return len(self._waiters)

    async def acquire(self, priority: int = 1) -> None:
        """Wait for a place; ``priority`` 0 passes every waiter of priority 1."""
        if self.closed:
            raise GateClosed
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # given a place as it was cancelled: hand it on
            raise

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        """Give a place back: to the first waiter by priority, or to the pool."""
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self.free += 1

    def close(self) -> None:
        """Let no more jobs start (a warm shutdown): every waiter gets :class:`GateClosed`."""
        self.closed = True
        waiters, self._waiters = self._waiters, []
        for _, _, future in waiters:
            if not future.done():
                future.set_exception(GateClosed())
