"""Idempotency keys: a key names one job for as long as that job's state lives.

An idempotency key is first claimed as pending ("p:<job id>") and confirmed ("<job id>", for
the job TTL) once its job is published: a concurrent call with the same key never answers
with the id of a job whose publish may still fail. It waits up to
MAILDISPATCH_IDEMPOTENCY_WAIT for the other call to confirm or release the key. A pending
claim lapses after PENDING_TTL seconds, so that a producer that died mid-call does not hold
its keys for the whole job TTL (a send_many call must finish within that time).
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from config import keys
from config.lua import lua_script
from config.redisconn import ReplicaWait, SyncState, by_shard, exchange
from config.settings import Settings
from producers.enqueue import STATE_CHUNK, Backoff, as_text, retrying, ttl_until_due
from producers.errors import IdempotencyInProgress
from producers.job import SendJob
from producers.wire import batches

PENDING_TTL = 600
_PENDING = "p:"

_CLAIM_KEYS = lua_script("producers", "claim_keys")

_SETTLE = lua_script("producers", "settle")


def eval_packed(
    client: SyncState,
    script: str,
    names: Sequence[str],
    args: Sequence[Any],
    wait: ReplicaWait | None = None,
) -> Any:
    """EVAL, its arguments packed by hiredis (redis-py packs each in Python: as much as the
    rest of a claim of many idempotency keys); on a cluster, kept by a replica when ``wait``."""
    return exchange(client, names[0], [("EVAL", script, len(names), *names, *args)], wait)[0]


class IdempotencyKeys:
    """Claims (pending), confirms and releases the idempotency keys of a call's jobs."""

    def __init__(self, client: SyncState, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.wait = ReplicaWait.of(settings)

    def claim(
        self, jobs: list[SendJob], claimed: set[str], backoff: Backoff
    ) -> tuple[list[uuid.UUID], list[int]]:
        """Every job's id (a repeated idempotency key's first id) and the positions of new jobs.

        A key claimed by this call (``claimed``, updated here) or confirmed by an earlier one
        gives its job's id; a key another call is still enqueueing is waited for (see
        ``idempotency_wait``): taken over if that call released it, or
        :class:`IdempotencyInProgress`.
        """
        first: dict[int, uuid.UUID] = {}  # position -> the id that answers it
        repeats: set[int] = set()  # positions answered with an earlier job's id
        waiting = [(n, j) for n, j in enumerate(jobs) if j.idempotency_key]
        deadline = time.monotonic() + self.settings.idempotency_wait
        while waiting:
            named = [(keys.idempotency(j.owner, j.idempotency_key or ""), n, j) for n, j in waiting]
            replies: dict[int, Any] = {}
            for group in by_shard(self.redis, named, lambda item: keys.shard_of_key(item[0])):
                names = [name for name, _, _ in group]
                values = [PENDING_TTL, *[f"{_PENDING}{j.id}" for _, _, j in group]]
                # SET NX of this call's own value: a claim sent again finds it, its own
                found = retrying(
                    functools.partial(
                        eval_packed, self.redis, _CLAIM_KEYS, names, values, self.wait
                    ),
                    backoff,
                )
                replies |= {n: stored for (_, n, _), stored in zip(group, found, strict=True)}
            busy = []
            for n, j in waiting:
                stored = replies[n]
                value = as_text(stored)
                job_id = value.removeprefix(_PENDING)
                if value == f"{_PENDING}{j.id}" and job_id not in claimed:
                    claimed.add(job_id)  # this call's claim: a new job
                elif not value or (value != job_id and job_id not in claimed):
                    busy.append((n, j))  # lapsed meanwhile, or another call has not published
                    continue
                else:  # confirmed by an earlier call (even with this very id), or this one's
                    repeats.add(n)
                first[n] = uuid.UUID(job_id)
            waiting = busy
            if waiting and time.monotonic() >= deadline:
                with contextlib.suppress(redis.RedisError):
                    mine = [j for n, j in enumerate(jobs) if n in first and n not in repeats]
                    self.settle(mine, 0.0, Backoff(0), release=True)
                raise IdempotencyInProgress([j.idempotency_key or "" for _, j in waiting])
            if waiting:
                time.sleep(0.02)
        if not first:
            return [j.id for j in jobs], list(range(len(jobs)))
        ids = [first.get(n, j.id) for n, j in enumerate(jobs)]
        fresh = [n for n in range(len(jobs)) if n not in repeats]
        return ids, fresh

    def settle(
        self, jobs: Sequence[SendJob], now: float, backoff: Backoff, release: bool = False
    ) -> None:
        """Confirm the idempotency keys these jobs still hold pending, for as long as each job's
        state lives (its TTL after it is due), or release them."""
        keyed = [j for j in jobs if j.idempotency_key]
        ttl = self.settings.job_ttl
        named = [(keys.idempotency(j.owner, j.idempotency_key or ""), j) for j in keyed]
        for group in by_shard(self.redis, named, lambda item: keys.shard_of_key(item[0])):
            for chunk in batches(group, STATE_CHUNK):
                names = [name for name, _ in chunk]
                args: list[Any] = []
                for _, j in chunk:
                    due = j.send_at.timestamp() if j.send_at else None
                    args += [str(j.id), 0 if release else ttl_until_due(ttl, due, now)]
                call = functools.partial(eval_packed, self.redis, _SETTLE, names, args, self.wait)
                retrying(call, backoff)
