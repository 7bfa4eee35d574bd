"""Failed Send rows of concurrent jobs written together: one transaction per batch, not per job.

A delivery worker delivers a group's jobs concurrently on its event loop; when a relay refuses
many of them (a bad list, a blocked sender), each failure used to cost a transaction and a
thread hop of its own. Rows handed to :meth:`RowWriter.write` while a write is being gathered
(the same loop iteration, or up to :data:`GATHER` seconds) go to the store in one transaction;
every caller waits for the commit of its rows, so a job's state still changes only after its
rows are stored (nothing is lost to a crash in between: a row can only be written twice, and
``record_failed_sends`` keeps the first). If the batch's transaction fails, each caller's rows
are written alone, so that one caller's trouble is not the others'.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from worker.store import Store, repo

#: how long a batch waits for more rows after the first (failures are not on the sent path)
GATHER = 0.005
#: rows per transaction at most
MAX_ROWS = 1000

Rows = Sequence[dict[str, Any]]


class RowWriter:
    """Gathers Failed Send rows from concurrent callers into shared transactions."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self.store = store
        self._pending: list[tuple[Rows, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None
        #: transactions written (for the tests and the logs)
        self.transactions = 0

    async def write(self, rows: Rows) -> None:
        """Store ``rows``; returns once they are committed (raises what the store raised)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        await asyncio.sleep(GATHER)
        while self._pending:
            batch: list[tuple[Rows, asyncio.Future[None]]] = []
            count = 0
            while self._pending and (not batch or count + len(self._pending[0][0]) <= MAX_ROWS):
                rows, future = self._pending.pop(0)
                batch.append((rows, future))
                count += len(rows)
            try:
                await asyncio.to_thread(self._commit, [r for rows, _ in batch for r in rows])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                await self._alone(batch)
                continue
            for _, future in batch:
                _settle(future, None)

    async def _alone(self, batch: list[tuple[Rows, asyncio.Future[None]]]) -> None:
        for rows, future in batch:
            try:
                await asyncio.to_thread(self._commit, list(rows))
            except Exception as exc:
                _settle(future, exc)
            else:
                _settle(future, None)

    def _commit(self, rows: list[dict[str, Any]]) -> None:
        with self.store().session() as session:
            repo.record_failed_sends(session, rows)
        self.transactions += 1


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
