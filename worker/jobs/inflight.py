"""In-flight batches: who delivers what right now, so that a dead worker's jobs come back promptly.

A worker process registers each batch before claiming its jobs: the batch's job JSON under
``keys.batch(id)`` and the batch id in the ``keys.INFLIGHT`` sorted set, scored by when its lease runs
out. While the process lives it renews the leases of its batches every ``lease / 4`` seconds; a
batch that ends is removed, a batch that crashes is marked expired at once. A claim records the
batch as the job's ``holder``, so a redelivered copy of the job is ``busy`` only while its holder
is alive (worker/jobs/state.py).

The scheduler's :func:`reap` finds batches whose lease ran out (``kill -9``, a lost host, a crashed
batch), releases their ``sending`` jobs (the next claim sees them as ``uncertain`` and follows
``MAILDISPATCH_ON_UNCERTAIN``) and republishes every job of the batch that is neither final nor
waiting in the schedule. It covers the case the broker cannot: a redelivered copy that answered
``busy`` was acked, then the holder died.

Cost: one script when a batch starts and one when it ends (the JSON of a batch is in Redis only
while it is being delivered), both through the process's AutoPipeline (worker/jobs/autopipe.py), so
they share round trips with the claims and finishes of the same loop iteration; the end is not
waited for. Nothing per job beyond the claim's own script.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

import structlog

from config import fastjson, keys
from config.lua import lua_script
from config.redisconn import AsyncState, by_shard
from worker.jobs.autopipe import AutoPipeline

log = structlog.get_logger("maildispatch.inflight")

T = TypeVar("T")

#: the batch the current coroutine delivers ("" outside a registered batch); claims read it
current_batch: ContextVar[str] = ContextVar("maildispatch_batch", default="")

#: seconds a reaper holds a dead batch before another scheduler may take it up again
REAP_LOCK = 30

_REAP = lua_script("worker.jobs", "reap")

_REAP_JOBS = lua_script("worker.jobs", "reap_jobs")


_REGISTER = lua_script("worker.jobs", "register")

_END = lua_script("worker.jobs", "end")


class Publisher(Protocol):
    """What the reaper needs of a producer: publish jobs (wire form) as batches."""

    def publish(self, wires: Sequence[dict[str, Any]]) -> None:
        """Publish the jobs to their queues."""
        ...


class InFlight:
    """The batches this worker process is delivering, with their leases kept alive."""

    def __init__(
        self, client: AsyncState, *, lease: float, ttl: float, auto: AutoPipeline | None = None
    ) -> None:
        self.redis = client
        self.auto = auto or AutoPipeline(client)
        self.lease = lease
        self.ttl = int(ttl)
        self._register = client.register_script(_REGISTER)
        self._end = client.register_script(_END)
        self._held: set[str] = set()
        self._renewer: asyncio.Task[None] | None = None

    async def run(self, wires: Sequence[Any], work: Callable[[], Awaitable[T]]) -> T:
        """Register the batch, run ``work`` as its holder, then remove it (or mark it expired)."""
        batch_id = uuid.uuid4().hex
        batch_key = keys.batch(batch_id)
        await self.auto.script(
            self._register,
            [batch_key, keys.INFLIGHT],
            [fastjson.dumps(list(wires)), self.ttl, time.time() + self.lease, batch_id],
        )
        self._held.add(batch_id)
        self._ensure_renewer()
        token = current_batch.set(batch_id)
        try:
            result = await work()
        except BaseException:
            self._held.discard(batch_id)
            # the batch crashed: its leftover `sending` jobs are uncertain now, not in a minute
            with contextlib.suppress(Exception):
                await self.redis.zadd(keys.INFLIGHT, {batch_id: 0}, xx=True)
            raise
        finally:
            current_batch.reset(token)
        self._held.discard(batch_id)
        # not waited for: a lost end only leaves an entry whose lease runs out, and the reaper
        # then finds every job of it final (nothing to publish again)
        self.auto.send_script(self._end, [batch_key, keys.INFLIGHT], [batch_id])
        return result

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        interval = max(self.lease / 4, 0.05)
        pause = interval
        while True:
            await asyncio.sleep(pause)
            pause = interval
            held = list(self._held)
            if not held:
                continue
            until = time.time() + self.lease
            try:
                await self.redis.zadd(keys.INFLIGHT, dict.fromkeys(held, until), xx=True)
            except Exception:  # Redis away: the leases may run out, and the reaper takes over
                log.warning("inflight_renew_failed", batches=len(held))
                # renewed again as soon as Redis is back: ahead of a reaper that would take a
                # living batch for a dead one (its jobs' outcomes held, worker/jobs/state.py)
                pause = min(interval, 0.5)

    async def close(self) -> None:
        """Stop renewing and send the last writes (the process is going away)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewer
        with contextlib.suppress(Exception):
            await self.auto.drain()


async def reap(client: AsyncState, publisher: Publisher, limit: int = 20) -> int:
    """Republish the unfinished jobs of batches whose holder's lease ran out; returns how many."""
    now = time.time()
    expired = [
        _text(b) for b in await client.zrangebyscore(keys.INFLIGHT, "-inf", now, start=0, num=limit)
    ]
    total = 0
    for batch_id in expired:
        raw = await client.get(keys.batch(batch_id))
        wires = _wires(raw)
        if wires is None:
            log.error("inflight_batch_missing", batch=batch_id)
            await client.zrem(keys.INFLIGHT, batch_id)
            continue
        by_id = {str(w["id"]): w for w in wires}
        if not await client.eval(
            _REAP, 2, keys.INFLIGHT, keys.reaping(batch_id), now, batch_id, REAP_LOCK
        ):
            continue
        again: list[str] = []
        for group in by_shard(client, by_id, keys.shard):
            names = [*map(keys.job, group), *map(keys.schedule_of, group)]
            found = await client.eval(_REAP_JOBS, len(names), *names, now, batch_id, *group)
            again += [_text(i) for i in found]
        if again:
            await asyncio.to_thread(publisher.publish, [by_id[i] for i in again])
        pipe = client.pipeline(transaction=True)
        pipe.zrem(keys.INFLIGHT, batch_id)
        pipe.delete(keys.batch(batch_id), keys.reaping(batch_id))
        await pipe.execute()
        log.warning(
            "inflight_batch_reaped", batch=batch_id, jobs=len(by_id), republished=len(again)
        )
        total += len(again)
    return total


def _wires(raw: bytes | str | None) -> list[dict[str, Any]] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, list):
        return None
    return [w for w in data if isinstance(w, dict) and "id" in w]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
