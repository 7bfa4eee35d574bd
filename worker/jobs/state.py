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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from config import fastjson, keys, redisconn
from config.events import min_id
from config.lua import lua_script
from config.redisconn import AsyncState, ReplicaWait
from config.states import JobState
from producers.enqueue import ttl_until_due
from worker.jobs.autopipe import AutoPipeline
from worker.jobs.inflight import InFlight, current_batch

log = structlog.get_logger("maildispatch.state")

#: Redis errors a write may get past by trying again (config/redisconn.py), and the socket's own
TRANSIENT: tuple[type[BaseException], ...] = (*redisconn.TRANSIENT, OSError)

_CLAIM = lua_script("worker.jobs", "claim")

_TAKE_DUE = lua_script("worker.jobs", "take_due")

_PUBLISHED = lua_script("worker.jobs", "published")

_FINISH = lua_script("worker.jobs", "finish")

_PARK = lua_script("worker.jobs", "park")

_KEEP_WAITING = lua_script("worker.jobs", "keep_waiting")

Decision = Literal["go", "uncertain", "done", "busy", "wait", "vanished"]

#: events as written to the stream: (owner, the event's JSON from config/events.py ``encode``)
Events = Sequence[tuple[str, str]]


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

    def __init__(
        self,
        client: AsyncState,
        *,
        lease: float,
        ttl: float,
        events_retention: float = 86400.0,
        hot_ttl: float | None = None,
        wait: ReplicaWait | None = None,
    ) -> None:
        self.redis = client
        self.lease = lease
        self.ttl = int(ttl)
        #: how long a final state stays (MAILDISPATCH_JOB_HOT_TTL; the history keeps it after)
        self.hot_ttl = int(hot_ttl if hot_ttl is not None else ttl)
        #: 0: no events are written (config/events.py)
        self.events_retention = events_retention
        self._claim = client.register_script(_CLAIM)
        self._take_due = client.register_script(_TAKE_DUE)
        self._published = client.register_script(_PUBLISHED)
        self._finish = client.register_script(_FINISH)
        self._park_script = client.register_script(_PARK)
        self._keep_waiting = client.register_script(_KEEP_WAITING)
        #: claims and finishes of concurrent jobs share round trips (worker/jobs/autopipe.py)
        self.auto = AutoPipeline(client, wait=wait)
        self.inflight = InFlight(client, lease=lease, ttl=ttl, auto=self.auto)
        self._leased_until: dict[str, float] = {}
        #: outcomes Redis has not taken yet (job id -> state, fields, events): a `sent` whose
        #: write met a Redis blip is held here and recorded by the next claim of the job (the
        #: batch's retry), never sent again by this process
        self.unrecorded: dict[str, tuple[str, bytes | str, Events]] = {}
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
        holder = ""
        for _ in range(3):
            now = time.time()
            reply = await self.auto.script(
                self._claim,
                keys=[keys.job(job_id)],
                args=[now, self.lease, self.ttl, owner, channel, current_batch.get(), holder],
            )
            decision, second, pending, enqueued, deferred = (_text(x) for x in reply)
            if decision != "holder":
                break
            # a redelivered copy of a job in delivery: is its holder's worker still alive?
            alive = await self.auto.command("ZSCORE", keys.INFLIGHT, second)
            holder = f"{second} {_text(alive) if alive is not None else '-'}"
        else:  # its holder changed under each look: some other copy is running it now
            return Claim("busy")
        if decision in ("done", "busy", "wait"):
            return Claim(decision, final_state=second)  # type: ignore[arg-type]
        return Claim(
            decision,  # type: ignore[arg-type]
            attempt=int(second),
            pending=tuple(json.loads(pending)) if pending else None,
            enqueued_at=float(enqueued),
            deferred=float(deferred or 0),
        )

    async def finish(self, job_id: str, state: str, events: Events = (), **fields: Any) -> None:
        """Record a final state and the events that report it (one write: this is the only
        uncertain window)."""
        mapping: dict[Any, Any] = {
            "state": state,
            "updated_at": time.time(),
            "lease_until": 0,
        }
        mapping |= {k: _field(v) for k, v in fields.items() if v is not None}
        # values as redis-py would have written them: str as is, numbers by repr()
        text = {k: v if isinstance(v, str) else repr(v) for k, v in mapping.items()}
        await self._record(job_id, state, fastjson.dumps(text), events)

    async def _record(
        self, job_id: str, state: str, fields: bytes | str, events: Events = ()
    ) -> None:
        """Write a final state; a Redis blip is retried (doubling from 50 ms to 2 s) within
        ``record_retry_for``, and past it the outcome stays held in ``unrecorded``."""
        delay, deadline = 0.05, time.monotonic() + self.record_retry_for
        args: list[Any] = [self.hot_ttl, fields, min_id(self.events_retention)]
        for owner, body in events if self.events_retention > 0 else ():
            args += [owner, body]
        while True:
            try:
                await self.auto.script(
                    self._finish, keys=[keys.job(job_id), keys.events_of(job_id)], args=args
                )
            except TRANSIENT as exc:
                self.unrecorded[job_id] = (state, fields, events)
                if time.monotonic() + delay > deadline:
                    log.error("state_record_failed", job_id=job_id, state=state, error=str(exc))
                    raise
                log.warning("state_record_retry", job_id=job_id, state=state, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.unrecorded.pop(job_id, None)
            return

    async def emit(self, job_id: str, events: Events) -> None:
        """Write events about a job that no state change carries (a Failed Send row's, written
        before the job's state): awaited, so that they are in the stream before what follows."""
        if self.events_retention <= 0:
            return
        minimum = min_id(self.events_retention)
        stream = keys.events_of(job_id)
        for owner, body in events:
            await self.auto.command("XADD", stream, "MINID", minimum, "*", "o", owner, "d", body)

    async def schedule_retry(
        self,
        job_id: str,
        wire: dict[str, Any],
        due: float,
        pending: tuple[str, ...] | None,
        events: Events = (),
        **fields: Any,
    ) -> None:
        """Park a job in the schedule until ``due``; the scheduler publishes it again then."""
        mapping: dict[str, Any] = {
            "state": JobState.RETRYING,
            "next_at": due,
            "updated_at": time.time(),
            "lease_until": 0,
        }
        mapping |= {k: _field(v) for k, v in fields.items() if v is not None}
        gone = ["holder"]
        if pending:
            mapping["pending"] = json.dumps(list(pending))
        else:
            gone.append("pending")
        # every write sets a value, so one sent again after a lost reply is the same: retried
        # like a final state (a partly accepted job's pending recipients must not be lost to a
        # blip, or all of them would be sent again)
        await self._park(job_id, wire, due, mapping, gone, 0, 0, events, JobState.RETRYING)

    async def defer(
        self, job_id: str, wire: dict[str, Any], due: float, scope: str, events: Events = ()
    ) -> None:
        """Park a job over a rate limit until ``due``: no attempt used, no give-up time spent."""
        now = time.time()
        kind = scope.split(":", 1)[0]
        mapping = {
            "state": JobState.DEFERRED,
            "next_at": due,
            "updated_at": now,
            "lease_until": 0,
            "deferred_by": scope,
        }
        waited = max(due - now, 0.0)
        await self._park(job_id, wire, due, mapping, ["holder"], -1, waited, events, "deferred")
        await asyncio.gather(  # the fleet's counters: in another slot than the job
            self.auto.command("HINCRBY", keys.COUNTERS, "deferred", 1),
            self.auto.command("HINCRBY", keys.COUNTERS, f"deferred:{kind}", 1),
        )

    async def _park(
        self,
        job_id: str,
        wire: dict[str, Any],
        due: float,
        mapping: dict[str, Any],
        gone: list[str],
        attempts: int,
        deferred: float,
        events: Events,
        state: str,
    ) -> None:
        """One atomic write of a job waiting in the schedule (park.lua), retried through Redis'
        transient errors within ``record_retry_for``."""
        ttl = ttl_until_due(self.ttl, due, time.time())  # kept until due, then the usual TTL
        text = {k: v if isinstance(v, str) else repr(v) for k, v in mapping.items()}
        args: list[Any] = [
            job_id,
            due,
            ttl,
            json.dumps(wire),
            fastjson.dumps(text),
            fastjson.dumps(gone),
            attempts,
            deferred,
            min_id(self.events_retention),
        ]
        for owner, body in events if self.events_retention > 0 else ():
            args += [owner, body]
        names = [
            keys.job(job_id),
            keys.payload(job_id),
            keys.schedule_of(job_id),
            keys.events_of(job_id),
        ]

        async def write() -> None:
            await self.auto.script(self._park_script, keys=names, args=args)

        await self._retried(write, job_id, state)

    async def keep_waiting(self, job_id: str, wire: dict[str, Any]) -> bool:
        """A job whose claim answered ``wait``: back in its schedule, due when it was, unless it
        is there still or no longer waits (keep_waiting.lua). Whether it was put back."""
        names = [keys.job(job_id), keys.payload(job_id), keys.schedule_of(job_id)]
        args = [job_id, time.time(), self.ttl, json.dumps(wire)]
        return bool(await self.auto.script(self._keep_waiting, keys=names, args=args))

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

    async def take_due(
        self, limit: int = 500, lease: float = 60.0
    ) -> list[tuple[str, dict[str, Any] | None]]:
        """Jobs due now, with their payloads; leased so a crashed scheduler's share comes back.
        Every shard's schedule is looked at, for its share of ``limit``."""
        now = time.time()
        until = now + lease
        each = -(-limit // keys.SHARDS)
        taken = await asyncio.gather(
            *(
                self.auto.script(self._take_due, keys=[name], args=[now, until, each])
                for name in keys.SCHEDULES
            )
        )
        ids = [_text(i) for found in taken for i in found]
        if not ids:
            return []
        self._leased_until = dict.fromkeys(ids, until)  # read back by published()
        payloads = await asyncio.gather(*(self.auto.command("GET", keys.payload(i)) for i in ids))
        return [(i, json.loads(p) if p else None) for i, p in zip(ids, payloads, strict=True)]

    async def not_cancelled(self, job_ids: list[str]) -> list[str]:
        """The jobs of ``job_ids`` that are not ``cancelled``."""
        states = await asyncio.gather(
            *(self.auto.command("HGET", keys.job(i), "state") for i in job_ids)
        )
        return [
            i for i, st in zip(job_ids, states, strict=True) if st != JobState.CANCELLED.encode()
        ]

    async def published(self, job_ids: list[str]) -> None:
        """Remove jobs from the schedule once their batch is on the queue (unless re-scheduled)."""
        groups: dict[tuple[int, float], list[str]] = {}
        for i in job_ids:
            groups.setdefault((keys.shard(i), self._leased_until.pop(i, -1.0)), []).append(i)
        await asyncio.gather(
            *(
                self.auto.script(
                    self._published,
                    keys=[keys.schedule(n), *[keys.payload(i) for i in ids]],
                    args=[until, *ids],
                )
                for (n, until), ids in groups.items()
            )
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
