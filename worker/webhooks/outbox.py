"""The webhook outbox: events fanned out from the streams into ordered lanes, and their schedule.

The event streams (config/events.py, one per shard) are the durable log. The scheduler (every
scheduler of the fleet: they share the streams' consumer group ``webhooks``) reads new entries
of every shard's stream with ``XREADGROUP`` and appends each event to a *lane* of every
endpoint that wants it: a Redis list, ``endpoint:n`` with ``n`` a hash of the job id, so that
one job's events stay in order while an endpoint receives up to ``LANES`` at once. On a single
Redis the appends and the entries' ``XACK`` are one transaction. A Redis Cluster refuses a
transaction across slots, so there the lanes are written first and the ``XACK`` after: entries
of a scheduler that dies in between are fanned out again after ``IDLE_MS``, their events
appended a second time with the same ids, which receivers deduplicate. An entry read by a
scheduler that died before acknowledging it is claimed by another after ``IDLE_MS``. Then it
publishes a ``maildispatch.webhooks.lane`` task for each lane it filled (queue ``mail.events``,
worker/webhooks/deliver.py), for each lane whose retry time came (``keys.WEBHOOK_DUE``), and, every
``SWEEP_EVERY`` seconds, for lanes holding events that nothing is delivering (a task lost with
its worker). A lane is delivered by one task at a time (a lease), so duplicates of a
task are harmless.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from config import keys
from config.events import ack, read_group
from config.redisconn import AsyncState, SyncState, clustered
from producers.enqueue import as_text
from worker.webhooks.endpoints import Endpoint

#: lanes per endpoint: events of different jobs delivered at once, one job's in order
LANES = 16
#: an entry read but not fanned out for this long (its scheduler died) is taken by another
IDLE_MS = 60_000
#: stream entries fanned out per call
BATCH = 500
#: how often lanes left without a task are looked for (seconds)
SWEEP_EVERY = 10.0


def lane_of(endpoint_id: int, job_id: str) -> str:
    """The lane of a job's events for an endpoint."""
    return f"{endpoint_id}:{zlib.crc32(job_id.encode()) % LANES}"


def _targets(endpoints: Sequence[Endpoint], owner: str, body: bytes) -> list[str]:
    event = orjson.loads(body)
    at = datetime.fromisoformat(event["timestamp"]).timestamp()
    job_id = str(event["data"]["job_id"])
    return [lane_of(e.id, job_id) for e in endpoints if e.wants(owner, event["type"], at)]


async def fan_out(
    client: AsyncState, endpoints: Sequence[Endpoint], consumer: str
) -> tuple[int, set[str], bool]:
    """Append new events to their endpoints' lanes; returns how many entries were read, the
    lanes that got events, and whether more entries may be waiting."""
    if not endpoints:
        return 0, set(), False  # nothing to read for (the groups are made with the first endpoint)
    oldest = min(e.created_at for e in endpoints)
    # an endpoint takes only events written after it was added (Endpoint.wants)
    read = await read_group(
        client,
        keys.WEBHOOK_GROUP,
        consumer,
        start=f"{int((oldest - 5) * 1000)}-0",
        count=BATCH,
        idle_ms=IDLE_MS,
    )
    if not read.entries:
        return 0, set(), False
    filled: set[str] = set()
    atomic = not clustered(client)  # see the module: lanes, then XACK, on a cluster
    pipe = client.pipeline(transaction=atomic)
    for _, _, fields in read.entries:
        body = fields[b"d"]
        for lane in _targets(endpoints, as_text(fields[b"o"]), body):
            pipe.rpush(keys.webhook_lane(lane), body)
            pipe.sadd(keys.WEBHOOK_LANES, lane)
            filled.add(lane)
    if not atomic:
        await pipe.execute()
        pipe = client.pipeline(transaction=False)
    ack(pipe, keys.WEBHOOK_GROUP, [(stream, entry_id) for stream, entry_id, _ in read.entries])
    await pipe.execute()
    return len(read.entries), filled, read.more


async def due_lanes(client: AsyncState) -> list[str]:
    """Lanes whose retry time came (taken off the schedule: a task is published for each)."""
    now = time.time()
    lanes: list[Any] = await client.zrangebyscore(keys.WEBHOOK_DUE, "-inf", now)
    if not lanes:
        return []
    await client.zrem(keys.WEBHOOK_DUE, *lanes)
    return [as_text(lane) for lane in lanes]


async def stranded_lanes(client: AsyncState) -> list[str]:
    """Lanes holding events with no retry scheduled and no task delivering them."""
    lanes = [as_text(lane) for lane in await client.smembers(keys.WEBHOOK_LANES)]
    if not lanes:
        return []
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        pipe.zscore(keys.WEBHOOK_DUE, lane)
        pipe.exists(keys.webhook_lease(lane))
    found = await pipe.execute()
    return [
        lane
        for lane, due, leased in zip(lanes, found[::2], found[1::2], strict=True)
        if due is None and not leased
    ]


def replay(client: SyncState, endpoint: Endpoint, since: float, until: float | None = None) -> int:
    """Append every event of the streams since ``since`` that ``endpoint`` takes to its lanes
    again (each keeps its id: receivers deduplicate); returns how many. Stream after stream:
    events of different jobs may come out of time order, one job's (in one stream) do not."""
    return sum(_replay(client, stream, endpoint, since, until) for stream in keys.EVENTS)


def _replay(
    client: SyncState, stream: str, endpoint: Endpoint, since: float, until: float | None
) -> int:
    start = f"{int(since * 1000)}-0"
    end = f"{int(until * 1000)}-0" if until is not None else "+"
    count = 0
    while True:
        entries: Any = client.xrange(stream, min=start, max=end, count=BATCH)
        if not entries:
            return count
        pipe = client.pipeline(transaction=True)  # webhook keys share one slot ({wh})
        for _, fields in entries:
            body = fields[b"d"]
            event = orjson.loads(body)
            if endpoint.wants(as_text(fields[b"o"]), event["type"], float("inf")):
                lane = lane_of(endpoint.id, str(event["data"]["job_id"]))
                pipe.rpush(keys.webhook_lane(lane), body)
                pipe.sadd(keys.WEBHOOK_LANES, lane)
                pipe.zadd(keys.WEBHOOK_DUE, {lane: 0})
                count += 1
        pipe.execute()
        start = "(" + as_text(entries[-1][0])


class Fanout:
    """The scheduler's webhook step: fan out, then a task per lane with work (see the module)."""

    #: seconds between two reads of the enabled endpoints from the store
    REFRESH = 2.0

    def __init__(self, load: Any, publish: Any, consumer: str) -> None:
        self.load = load  # () -> list[Endpoint] (a thread: it reads the store)
        self.publish = publish  # (lanes) -> None (a thread: it publishes tasks)
        self.consumer = consumer
        self.endpoints: list[Endpoint] = []
        self._loaded_at = 0.0
        self._swept_at = 0.0

    async def tick(self, client: AsyncState) -> int:
        """One round; returns how many lanes got a task (0: nothing to do)."""
        now = time.monotonic()
        if now - self._loaded_at >= self.REFRESH:
            self.endpoints = await asyncio.to_thread(self.load)
            self._loaded_at = now
        lanes = set(await due_lanes(client))
        for _ in range(10):  # a backlog: several batches a tick, a bounded time
            _, filled, more = await fan_out(client, self.endpoints, self.consumer)
            lanes |= filled
            if not more:
                break
        if now - self._swept_at >= SWEEP_EVERY:
            self._swept_at = now
            lanes |= set(await stranded_lanes(client))
        if lanes:
            await asyncio.to_thread(self.publish, sorted(lanes))
        return len(lanes)
