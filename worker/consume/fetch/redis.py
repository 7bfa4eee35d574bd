"""Delivery task messages taken from kombu's Redis lists many at a time, on the worker's loop.

kombu's Redis consumer takes one message per round trip (``BRPOP``), copies it into its unacked
hash with another, and acknowledges it with a third, each in the consumer's thread: a fixed cost
per message in that thread, whatever the message carries (worker/consume/fetch/__init__.py). For batches of
200 jobs it does not matter; for a stream of one-job messages (single sends, what services
mostly make) it caps a worker process near 500 emails/s while its event loop waits. With Redis
as the broker a delivery worker therefore takes its queues' messages itself, in the layout
kombu uses, so producers, Flower, kombu's own recovery and every other consumer see nothing
different:

- one script call takes up to the free part of ``MAILDISPATCH_WORKER_PREFETCH`` messages,
  urgent lane first (kombu's priority lists, config/celery.py), and records each in kombu's
  unacked hash and index (``[message, exchange, routing key]`` under a delivery tag of ours)
  in the same atomic call: a message is always either on its list or in the unacked hash;
- messages of the other lanes (batches of up to ``MAILDISPATCH_BATCH_SIZE`` jobs) are taken
  one per call, and only while the process holds fewer than twice ``MAILDISPATCH_WORKER_JOBS``
  jobs: a process never sits on batches its neighbours could be delivering, while urgent
  messages are still taken at once;
- a process that holds messages takes more once a quarter of its prefetch is free, not one by
  one as each is finished: the messages taken together are delivered as one group (one
  in-flight registration, one suppression lookup, worker/consume/stream.py);
- with nothing to take (its last take emptied every list it looked at) it waits, without
  taking anything, for the urgent list to be non-empty (``BLMOVE`` of the list onto itself: a
  no-op move that blocks) and, while it may take batches, for the bulk list too (a second
  ``BLMOVE``, on a second connection), at most ``IDLE_WAIT``; or for its held jobs to fall
  below the batch threshold;
- acknowledgements of every message finished in one loop iteration leave in one pipeline;
  a message handed back (its group crashed) goes back to the front of its list;
- the unacked index scores of held messages are renewed, so that the visibility timeout
  (kombu's restore of messages whose consumer died) only ever hands back a dead worker's.

Messages of a dead worker come back twice over: their jobs through the in-flight lease
(worker/jobs/inflight.py, within ``MAILDISPATCH_CLAIM_LEASE``), their messages through kombu's
visibility timeout (restored by this fetcher too, with kombu's own code, every RESTORE_EVERY
seconds). Claims make the second copy harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from kombu.transport.redis import Channel as KombuRedisChannel

from config import keys
from config.lua import lua_script
from worker.consume.fetch.message import Fetched, decode_body

log = structlog.get_logger("maildispatch.fetch")

#: the longest a fetcher waits on its empty urgent and bulk lists before it looks at every list
#: again (a message on another list, another priority or queue, waits this long at most). Timed on this side: Redis ends a
#: blocking command's timeout only when its event loop next wakes, every 100 ms (``hz`` 10) on
#: an idle server, so a ``BLMOVE`` of 0.03 s lasted ~100 ms there. Each look costs an idle
#: process CPU: 50 ms kept an idle 2-process line at ~7% of a core (20 ms: ~13%, the old
#: ~100 ms: ~5%), batches taken ~25 ms after they were sent (median; ~90 before)
IDLE_WAIT = 0.05
#: how often held messages' unacked scores are renewed, and kombu's restore is run
RENEW_EVERY = 10.0
RESTORE_EVERY = 10.0

#: kombu's priority steps (its Redis transport default) and the separator of its list names
PRIORITY_STEPS = (0, 3, 6, 9)
_SEP = "\x06\x16"

_TAKE = lua_script("worker.consume.fetch", "take")

_GIVE_BACK = lua_script("worker.consume.fetch", "give_back")


def decode(tag: str, raw: bytes) -> Fetched:
    """A message of kombu's Redis transport (its JSON envelope) as the stream reads it."""
    envelope = orjson.loads(raw)
    headers: dict[str, Any] = envelope.get("headers") or {}
    properties = envelope.get("properties") or {}
    priority = properties.get("priority")
    # where it goes back to: its queue's list at its priority
    queue = str((properties.get("delivery_info") or {}).get("routing_key") or "")
    body: Any = envelope.get("body")
    if not isinstance(body, str | bytes):
        raise ValueError("a task message without a body")
    payload = decode_body(body, envelope.get("content-type"), properties.get("body_encoding"))
    return Fetched(tag, headers, priority, _list_name(queue, _step(priority)), payload, raw)


class RedisFetcher:
    """Takes the messages of some delivery queues for this process's stream."""

    def __init__(
        self,
        client: aioredis.Redis,
        queues: list[str],
        prefetch: int,
        accept: Callable[[Fetched], None],
        restore: Callable[[], None] | None = None,
        jobs: int = 256,
    ) -> None:
        self.redis = client
        self.prefetch = prefetch
        #: batches are taken only while fewer jobs than this are held
        self.job_target = jobs
        #: once messages are held, more are taken when this many are free
        self.refill = max(1, prefetch // 4)
        self.accept = accept
        self.restore = restore
        # urgent lane of every queue first, then the other priorities, as kombu polls them
        self.lists = [_list_name(q, p) for p in PRIORITY_STEPS for q in queues]
        self.routing = [q for _ in PRIORITY_STEPS for q in queues]
        self.urgent = [_list_name(q, 0) for q in queues]
        self.bulk = [_list_name(q, PRIORITY_STEPS[-1]) for q in queues]
        self.unacked = KombuRedisChannel.unacked_key
        self.index = KombuRedisChannel.unacked_index_key
        self._take = client.register_script(_TAKE)
        self._give_back = client.register_script(_GIVE_BACK)
        self.held: dict[str, Fetched] = {}
        self.held_jobs = 0
        self._room = asyncio.Event()
        self._room.set()
        self._watches: dict[str, asyncio.Task[Any]] = {}
        self._acks: list[str] = []
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.taken = 0

    def start(self) -> None:
        """Start taking messages (on the running loop)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._take_forever()), loop.create_task(self._renew())]

    async def stop(self) -> None:
        """Take no more messages (held ones are still finished and acknowledged)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def close(self) -> None:
        """Close the fetcher's connections (once its held messages are acknowledged)."""
        with contextlib.suppress(aioredis.RedisError, OSError):
            await self.redis.aclose()

    async def _take_forever(self) -> None:
        failures = 0
        while not self._stopping:
            room = self.prefetch - len(self.held)
            if room <= 0 or (self.held and room < self.refill):
                self._room.clear()
                await self._room.wait()
                continue
            batches = 1 if self.held_jobs < self.job_target else 0
            try:
                got, drained = await self._take_some(room, batches)
                if not got or drained:  # nothing more to take now: wait, without a take
                    await self._wait_for_work(batches > 0)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away (or a bug): never stop taking for good
                failures += 1
                delay = min(10.0, 0.1 * 2**failures)
                if isinstance(exc, aioredis.RedisError | OSError):
                    log.warning("fetch_failed", error=type(exc).__name__, retry_in_s=delay)
                else:
                    log.exception("fetch_crashed", retry_in_s=delay)
                await asyncio.sleep(delay)

    async def _take_some(self, room: int, batches: int) -> tuple[int, bool]:
        """Take up to ``room`` messages; (how many, whether every list looked at is empty)."""
        prefix = f"md-{uuid.uuid4().hex}-"
        reply = await self._take(
            keys=[*self.lists, self.unacked, self.index],
            args=[time.time(), room, batches, len(self.urgent), prefix, *self.routing],
        )
        drained = bool(int(reply[0]))
        reply = reply[1:]
        for i in range(0, len(reply), 2):
            tag = _text(reply[i])
            raw = reply[i + 1]
            try:
                message = decode(tag, raw)
            except Exception as exc:  # poison: not a task message we can read
                log.error("message_undecodable", error=type(exc).__name__, size=len(raw))
                await self.redis.hincrby(keys.COUNTERS, "poison_messages", 1)
                self._acks.append(tag)
                self._flush_acks_soon()
                continue
            self.held[tag] = message
            self.held_jobs += message.jobs
            self.taken += 1
            self.accept(message)
        return len(reply) // 2, drained

    async def _wait_for_work(self, batches: bool) -> None:
        """Until an urgent message may be there, or (while batches may be taken) a bulk one, or
        IDLE_WAIT passed; while batches are held back, also until held jobs fall below the
        threshold."""
        watches = {self._watching(self.urgent[0])}
        if batches:  # also looked for again after IDLE_WAIT: other priorities, other queues
            watches.add(self._watching(self.bulk[0]))
            other: asyncio.Future[Any] = asyncio.ensure_future(asyncio.sleep(IDLE_WAIT))
        else:
            self._room.clear()
            other = asyncio.ensure_future(self._room.wait())
        try:
            await asyncio.wait({*watches, other}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            other.cancel()

    def _watching(self, name: str) -> asyncio.Task[Any]:
        """The wait for list ``name`` to be non-empty: a ``BLMOVE`` of the list onto itself,
        right to right, which blocks until the list has a message and leaves it where it was
        (a wait that takes nothing). Never cancelled (that would cost its connection): a wait
        that ends another way leaves it to finish by itself, and the next wait joins it."""
        watch = self._watches.get(name)
        if watch is None or watch.done():
            watch = asyncio.get_running_loop().create_task(
                self.redis.blmove(
                    name,
                    name,
                    IDLE_WAIT,  # type: ignore[arg-type]  # Redis takes a decimal timeout
                    "RIGHT",
                    "RIGHT",
                )
            )
            watch.add_done_callback(_consume)
            self._watches[name] = watch
        return watch

    def finished(self, message: Fetched, ok: bool) -> None:
        """A held message's jobs are finished: acknowledge it, or give it back (``ok=False``)."""
        if not ok:
            asyncio.get_running_loop().create_task(self._return(message))
            return
        self._acks.append(message.tag)
        self._flush_acks_soon()

    def _flush_acks_soon(self) -> None:
        if len(self._acks) == 1:
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._flush_acks()))

    async def _flush_acks(self) -> None:
        tags, self._acks = self._acks, []
        if not tags:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(self.index, *tags)
            pipe.hdel(self.unacked, *tags)
            await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:
            # not acknowledged: the visibility timeout hands the messages out again; their
            # jobs are final, so the claims skip them
            log.warning("ack_failed", messages=len(tags), error=type(exc).__name__)
        for tag in tags:
            self._release(tag)
        self._room.set()

    async def _return(self, message: Fetched) -> None:
        try:
            await self._give_back(
                keys=[self.unacked, self.index, message.key], args=[message.tag, message.raw]
            )
        except (aioredis.RedisError, OSError) as exc:
            log.warning("give_back_failed", error=type(exc).__name__)
        self._release(message.tag)
        self._room.set()

    def _release(self, tag: str) -> None:
        message = self.held.pop(tag, None)
        if message is not None:
            self.held_jobs -= message.jobs

    async def _renew(self) -> None:
        last_restore = time.monotonic()
        while True:
            await asyncio.sleep(RENEW_EVERY)
            held = list(self.held)
            with contextlib.suppress(aioredis.RedisError, OSError):
                if held:
                    await self.redis.zadd(self.index, dict.fromkeys(held, time.time()), xx=True)
            if self.restore is not None and time.monotonic() - last_restore >= RESTORE_EVERY:
                last_restore = time.monotonic()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.restore)


def _consume(task: asyncio.Task[Any]) -> None:
    """A finished wait's error is the next take's to meet, not asyncio's to log."""
    if not task.cancelled():
        task.exception()


def _step(priority: Any) -> int:
    try:
        value = max(0, min(9, int(priority)))
    except (TypeError, ValueError):
        value = 0
    return max(s for s in PRIORITY_STEPS if s <= value)


def _list_name(queue: str, priority: int) -> str:
    return f"{queue}{_SEP}{priority}" if priority else queue


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
