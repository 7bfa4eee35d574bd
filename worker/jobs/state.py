"""Per-job delivery state in Redis: the atomic claim, outcomes, and the durable schedule.

States: queued -> sending -> sent | failed | bounced | suppressed, with ``retrying`` (and
``scheduled`` for a future ``send_at``, ``deferred`` when over a fleet-wide rate limit) while a
job waits in the schedule sorted set; a waiting job may be ``cancelled`` (``Dispatcher.cancel``),
which the claim treats as final.
A job is claimed (``sending``, with a lease) right before its SMTP transaction, and marked ``sent``
with one Redis write right after the server's 250: that write is the only window in which a
crash can leave a job whose fate is uncertain (docs/decisions.md, MAILDISPATCH_ON_UNCERTAIN).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
import redis.exceptions
import structlog

from config import fastjson, keys
from producers.enqueue import ttl_until_due
from worker.jobs.autopipe import AutoPipeline
from worker.jobs.inflight import InFlight, current_batch

log = structlog.get_logger("maildispatch.state")

#: Redis errors a write may get past by trying again: a restart (BusyLoadingError is a
#: ConnectionError), a reset connection, a timeout
TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

# KEYS[1] job hash, KEYS[2] in-flight batches (worker/jobs/inflight.py).
# ARGV: now, lease seconds, ttl, owner, channel, holder batch id ("" when none)
# -> {decision, attempts, pending recipients json or "", enqueued_at, seconds deferred by limits}
_CLAIM = """
local k = KEYS[1]
local now = tonumber(ARGV[1])
local st = redis.call('HGET', k, 'state')
if st == 'sent' or st == 'failed' or st == 'bounced' or st == 'suppressed' or st == 'cancelled'
   or st == 'withdrawn' then
  return {'done', st, '', '', ''}
end
local decision = 'go'
if not st or redis.call('HGET', k, 'vanished') then
  -- every job is recorded before it is published: no state means it expired or was lost (it
  -- may even have been sent). Not sent blindly: held like a claim, to be recorded as failed
  if st == 'sending' and tonumber(redis.call('HGET', k, 'lease_until') or '0') > now then
    return {'busy', '', '', '', ''}
  end
  redis.call('HSET', k, 'state', 'sending', 'vanished', '1', 'owner', ARGV[4],
             'channel', ARGV[5], 'lease_until', now + tonumber(ARGV[2]), 'updated_at', ARGV[1])
  redis.call('EXPIRE', k, tonumber(ARGV[3]))
  return {'vanished', '0', '', ARGV[1], '0'}
end
if st == 'sending' then
  local lease = tonumber(redis.call('HGET', k, 'lease_until') or '0')
  -- the holder's batch lease (renewed while its worker process lives) decides when it has one
  local holder = redis.call('HGET', k, 'holder')
  if holder then
    local alive = redis.call('ZSCORE', KEYS[2], holder)
    if alive then lease = tonumber(alive) end
  end
  if lease > now then return {'busy', '', '', '', ''} end
  decision = 'uncertain'
elseif st == 'retrying' or st == 'scheduled' or st == 'deferred' then
  local due = tonumber(redis.call('HGET', k, 'next_at') or '0')
  -- a stale copy of the task (broker redelivery) must not run a retry early
  if due > now + 1 then return {'wait', '', '', '', ''} end
end
local attempts = redis.call('HINCRBY', k, 'attempts', 1)
redis.call('HSET', k, 'state', 'sending', 'lease_until', now + tonumber(ARGV[2]),
           'updated_at', ARGV[1])
if ARGV[6] ~= '' then redis.call('HSET', k, 'holder', ARGV[6]) else redis.call('HDEL', k, 'holder') end
redis.call('EXPIRE', k, tonumber(ARGV[3]))
return {decision, tostring(attempts), redis.call('HGET', k, 'pending') or '',
        redis.call('HGET', k, 'enqueued_at') or ARGV[1], redis.call('HGET', k, 'deferred_s') or '0'}
"""

# KEYS[1] schedule zset. ARGV: now, leased-until, limit -> ids due, re-scored to leased-until
_TAKE_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[2]), id)
end
return ids
"""

# KEYS[1] schedule zset, KEYS[2..] payload keys. ARGV: leased-until, then the job ids.
# A job re-scheduled meanwhile (its new attempt already failed and scheduled a retry) has another
# score and a new payload: both stay.
_PUBLISHED = """
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('DEL', KEYS[i])
  end
end
return 0
"""

# KEYS[1] job hash. ARGV: ttl, the fields as one JSON object of strings -> the final state in
# one atomic write. (One JSON argument instead of a pair of arguments per field: redis-py packs
# each argument in Python, which cost more than the rest of the write.)
_FINISH = """
local flat = {}
for name, value in pairs(cjson.decode(ARGV[2])) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('HDEL', KEYS[1], 'pending', 'holder')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""

Decision = Literal["go", "uncertain", "done", "busy", "wait", "vanished"]


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: whether to deliver, and with what."""

    decision: Decision
    attempt: int = 0
    pending: tuple[str, ...] | None = None  # recipients still to deliver after a partial failure
    enqueued_at: float = 0.0
    final_state: str = ""
    deferred: float = 0.0  # seconds spent deferred by rate limits: not part of the give-up budget


class JobStates:
    """Job state operations; one instance per worker process, on its event loop."""

    def __init__(self, client: aioredis.Redis, *, lease: float, ttl: float) -> None:
        self.redis = client
        self.lease = lease
        self.ttl = int(ttl)
        self._claim = client.register_script(_CLAIM)
        self._take_due = client.register_script(_TAKE_DUE)
        self._published = client.register_script(_PUBLISHED)
        self._finish = client.register_script(_FINISH)
        #: claims and finishes of concurrent jobs share round trips (worker/jobs/autopipe.py)
        self.auto = AutoPipeline(client)
        self.inflight = InFlight(client, lease=lease, ttl=ttl, auto=self.auto)
        self._leased_until: dict[str, float] = {}
        #: outcomes Redis has not taken yet (job id -> state, fields): a `sent` whose write met
        #: a Redis blip is held here and recorded by the next claim of the job (the batch's
        #: retry), never sent again by this process
        self.unrecorded: dict[str, tuple[str, bytes | str]] = {}
        #: how long a final write keeps retrying Redis' transient errors before the batch
        #: crashes (and is retried, its outcomes still held): within the batch's lease, which
        #: its holder renews meanwhile
        self.record_retry_for = lease

    async def claim(self, job_id: str, owner: str, channel: str) -> Claim:
        """Atomically move a job to ``sending`` unless it is final, leased or not yet due."""
        held = self.unrecorded.get(job_id)
        if held is not None:  # this process knows its outcome already: recorded, not redone
            await self._record(job_id, *held)
            log.info("state_recorded_late", job_id=job_id, state=held[0])
            return Claim("done", final_state=held[0])
        now = time.time()
        reply = await self.auto.script(
            self._claim,
            keys=[keys.job(job_id), keys.INFLIGHT],
            args=[now, self.lease, self.ttl, owner, channel, current_batch.get()],
        )
        decision, second, pending, enqueued, deferred = (_text(x) for x in reply)
        if decision in ("done", "busy", "wait"):
            return Claim(decision, final_state=second)  # type: ignore[arg-type]
        return Claim(
            decision,  # type: ignore[arg-type]
            attempt=int(second),
            pending=tuple(json.loads(pending)) if pending else None,
            enqueued_at=float(enqueued),
            deferred=float(deferred or 0),
        )

    async def finish(self, job_id: str, state: str, **fields: Any) -> None:
        """Record a final state (one write: this is the only uncertain window)."""
        mapping: dict[Any, Any] = {
            "state": state,
            "updated_at": time.time(),
            "lease_until": 0,
        }
        mapping |= {k: _field(v) for k, v in fields.items() if v is not None}
        # values as redis-py would have written them: str as is, numbers by repr()
        text = {k: v if isinstance(v, str) else repr(v) for k, v in mapping.items()}
        await self._record(job_id, state, fastjson.dumps(text))

    async def _record(self, job_id: str, state: str, fields: bytes | str) -> None:
        """Write a final state; a Redis blip is retried (doubling from 50 ms to 2 s) within
        ``record_retry_for``, and past it the outcome stays held in ``unrecorded``."""
        delay, deadline = 0.05, time.monotonic() + self.record_retry_for
        while True:
            try:
                await self.auto.script(
                    self._finish, keys=[keys.job(job_id)], args=[self.ttl, fields]
                )
            except TRANSIENT as exc:
                self.unrecorded[job_id] = (state, fields)
                if time.monotonic() + delay > deadline:
                    log.error("state_record_failed", job_id=job_id, state=state, error=str(exc))
                    raise
                log.warning("state_record_retry", job_id=job_id, state=state, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.unrecorded.pop(job_id, None)
            return

    async def schedule_retry(
        self,
        job_id: str,
        wire: dict[str, Any],
        due: float,
        pending: tuple[str, ...] | None,
        **fields: Any,
    ) -> None:
        """Park a job in the schedule until ``due``; the scheduler publishes it again then."""
        mapping: dict[Any, Any] = {
            "state": "retrying",
            "next_at": due,
            "updated_at": time.time(),
            "lease_until": 0,
        }
        mapping |= {k: _field(v) for k, v in fields.items() if v is not None}
        ttl = ttl_until_due(self.ttl, due, time.time())  # kept until due, then the usual TTL

        async def write() -> None:  # built anew for each attempt (a failed execute resets it)
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(keys.payload(job_id), json.dumps(wire), ex=ttl)
            pipe.hset(keys.job(job_id), mapping=mapping)
            if pending:
                pipe.hset(keys.job(job_id), "pending", json.dumps(list(pending)))
            else:
                pipe.hdel(keys.job(job_id), "pending")
            pipe.hdel(keys.job(job_id), "holder")
            pipe.expire(keys.job(job_id), ttl)
            pipe.zadd(keys.SCHEDULE, {job_id: due})
            await pipe.execute()

        # every command sets a value, so a transaction sent again after a lost reply is the
        # same: retried like a final state (a partly accepted job's pending recipients must
        # not be lost to a blip, or all of them would be sent again)
        await self._retried(write, job_id, "retrying")

    async def _retried(self, write: Callable[[], Awaitable[None]], job_id: str, state: str) -> None:
        """``write()``, tried again after Redis' transient errors within ``record_retry_for``."""
        delay, deadline = 0.05, time.monotonic() + self.record_retry_for
        while True:
            try:
                await write()
                return
            except TRANSIENT as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("state_record_retry", job_id=job_id, state=state, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def defer(self, job_id: str, wire: dict[str, Any], due: float, scope: str) -> None:
        """Park a job over a rate limit until ``due``: no attempt used, no give-up time spent."""
        now = time.time()
        kind = scope.split(":", 1)[0]
        ttl = ttl_until_due(self.ttl, due, now)  # kept until due, then the usual TTL
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.payload(job_id), json.dumps(wire), ex=ttl)
        pipe.hset(
            keys.job(job_id),
            mapping={
                "state": "deferred",
                "next_at": due,
                "updated_at": now,
                "lease_until": 0,
                "deferred_by": scope,
            },
        )
        pipe.hdel(keys.job(job_id), "holder")
        pipe.hincrby(keys.job(job_id), "attempts", -1)
        pipe.hincrbyfloat(keys.job(job_id), "deferred_s", max(due - now, 0.0))
        pipe.expire(keys.job(job_id), ttl)
        pipe.zadd(keys.SCHEDULE, {job_id: due})
        pipe.hincrby(keys.COUNTERS, "deferred", 1)
        pipe.hincrby(keys.COUNTERS, f"deferred:{kind}", 1)
        await pipe.execute()

    async def take_due(
        self, limit: int = 500, lease: float = 60.0
    ) -> list[tuple[str, dict[str, Any] | None]]:
        """Jobs due now, with their payloads; leased so a crashed scheduler's share comes back."""
        now = time.time()
        until = now + lease
        ids = [
            _text(i) for i in await self._take_due(keys=[keys.SCHEDULE], args=[now, until, limit])
        ]
        if not ids:
            return []
        self._leased_until = dict.fromkeys(ids, until)  # read back by published()
        payloads = await self.redis.mget([keys.payload(i) for i in ids])
        return [(i, json.loads(p) if p else None) for i, p in zip(ids, payloads, strict=True)]

    async def not_cancelled(self, job_ids: list[str]) -> list[str]:
        """The jobs of ``job_ids`` that are not ``cancelled``."""
        pipe = self.redis.pipeline(transaction=False)
        for i in job_ids:
            pipe.hget(keys.job(i), "state")
        states = await pipe.execute()
        return [i for i, st in zip(job_ids, states, strict=True) if st != b"cancelled"]

    async def published(self, job_ids: list[str]) -> None:
        """Remove jobs from the schedule once their batch is on the queue (unless re-scheduled)."""
        groups: dict[float, list[str]] = {}
        for i in job_ids:
            groups.setdefault(self._leased_until.pop(i, -1.0), []).append(i)
        for until, ids in groups.items():
            await self._published(
                keys=[keys.SCHEDULE, *[keys.payload(i) for i in ids]], args=[until, *ids]
            )

    async def count(self, name: str, amount: int = 1) -> None:
        """Bump an operational counter (poison messages, deferrals)."""
        await self.redis.hincrby(keys.COUNTERS, name, amount)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(value: Any) -> str | int | float:
    if isinstance(value, str | int | float):
        return value
    return json.dumps(value)
