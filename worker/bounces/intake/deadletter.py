"""The dead-letter store of bounce reports: what could not be ingested is kept, never lost.

A report lands here when its ingest hit the task's time limit, when the parser crashed on it,
when its run was killed (the hard time limit, or a worker that died twice on it), or when the
IMAP poller could not fetch it. The operator lists the entries and re-ingests one once the cause
is fixed (``maildispatch bounces dead list|show|retry|drop``). Entries live in Redis (config/keys.py)
until retried or dropped.

While a report is ingested it is also written under its task id with a deadline: a run killed
by the hard time limit cannot say so itself, so the next ingest (or ``dead list``) moves such
leftovers here once their deadline has passed.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import redis

from config import keys

__all__ = ["MAX_ATTEMPTS", "DeadLetters"]

#: runs of one task message that may die (worker killed) before it goes to the dead letters
MAX_ATTEMPTS = 2


class DeadLetters:
    """Dead-letter entries and in-progress ingests in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def add(self, wire: dict[str, Any], why: str, **details: Any) -> str:
        """Keep a report (its task payload); returns the entry's id. The same message kept again
        (a sender retrying, a loop, a flood of one message) is one entry: its id is the
        message's digest, and a repeat is only counted (``bounces_dead_repeated``)."""
        raw = wire.get("raw")
        if isinstance(raw, str):
            entry_id = hashlib.sha256(f"{why}\0{raw}".encode()).hexdigest()[:16]
            if self.redis.hexists(keys.BOUNCE_DEAD_META, entry_id):
                self.redis.hincrby(keys.COUNTERS, "bounces_dead_repeated", 1)
                return entry_id
        else:
            entry_id = uuid.uuid4().hex[:12]
        now = time.time()
        meta: dict[str, Any] = {
            "id": entry_id,
            "why": why,
            "at": now,
            "source": str(wire.get("source", "")),
            "size": wire.get("size"),
            "retryable": isinstance(wire.get("raw"), str),
        } | details
        pipe = self.redis.pipeline()
        pipe.hset(keys.BOUNCE_DEAD_META, entry_id, json.dumps(meta))
        pipe.hset(keys.BOUNCE_DEAD_WIRE, entry_id, json.dumps(wire))
        pipe.zadd(keys.BOUNCE_DEAD_INDEX, {entry_id: now})
        pipe.execute()
        self.redis.hincrby(keys.COUNTERS, f"bounces_dead_{why}", 1)
        return entry_id

    def entries(self) -> list[dict[str, Any]]:
        """Every entry's summary, oldest first (after moving killed runs in)."""
        self.sweep()
        ids = [_text(i) for i in self.redis.zrange(keys.BOUNCE_DEAD_INDEX, 0, -1)]
        if not ids:
            return []
        metas = self.redis.hmget(keys.BOUNCE_DEAD_META, ids)
        return [json.loads(m) for m in metas if m]

    def get(self, entry_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """An entry's summary and task payload."""
        meta, wire = (
            self.redis.hmget(keys.BOUNCE_DEAD_META, [entry_id])[0],
            self.redis.hget(keys.BOUNCE_DEAD_WIRE, entry_id),
        )
        if not meta or not wire:
            return None
        return json.loads(meta), json.loads(wire)

    def drop(self, entry_id: str) -> bool:
        """Remove an entry (after it was re-ingested, or by the operator)."""
        pipe = self.redis.pipeline()
        pipe.zrem(keys.BOUNCE_DEAD_INDEX, entry_id)
        pipe.hdel(keys.BOUNCE_DEAD_META, entry_id)
        pipe.hdel(keys.BOUNCE_DEAD_WIRE, entry_id)
        return bool(pipe.execute()[0])

    # -- ingests in progress -------------------------------------------------------------------
    def begin(self, task_id: str, wire: dict[str, Any], deadline: float) -> bool:
        """Note an ingest run; False when this message's runs already died MAX_ATTEMPTS times
        (it is then moved to the dead letters and must not be run again)."""
        previous = self.redis.hget(keys.BOUNCE_INGESTING, task_id)
        attempts = json.loads(previous)["attempts"] + 1 if previous else 1
        if attempts > MAX_ATTEMPTS:
            self.add(wire, "killed", task_id=task_id, attempts=attempts - 1)
            self.end(task_id)
            return False
        pipe = self.redis.pipeline()
        pipe.hset(keys.BOUNCE_INGESTING, task_id, json.dumps({"wire": wire, "attempts": attempts}))
        pipe.zadd(keys.BOUNCE_INGESTING_DEADLINES, {task_id: deadline})
        pipe.execute()
        return True

    def end(self, task_id: str) -> None:
        """The run finished (ingested, kept here, or handed back to the broker for a retry)."""
        pipe = self.redis.pipeline()
        pipe.hdel(keys.BOUNCE_INGESTING, task_id)
        pipe.zrem(keys.BOUNCE_INGESTING_DEADLINES, task_id)
        pipe.execute()

    def sweep(self, now: float | None = None) -> int:
        """Move runs past their deadline (killed by the hard time limit) to the dead letters."""
        late = self.redis.zrangebyscore(
            keys.BOUNCE_INGESTING_DEADLINES, "-inf", now or time.time(), start=0, num=100
        )
        moved = 0
        for raw_id in late:
            task_id = _text(raw_id)
            if not self.redis.zrem(keys.BOUNCE_INGESTING_DEADLINES, task_id):
                continue  # another process took it
            record = self.redis.hget(keys.BOUNCE_INGESTING, task_id)
            self.redis.hdel(keys.BOUNCE_INGESTING, task_id)
            if record:
                data = json.loads(record)
                self.add(data["wire"], "time_limit_killed", task_id=task_id)
                moved += 1
        return moved


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
