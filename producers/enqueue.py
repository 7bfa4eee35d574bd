"""The Redis side of an enqueue: job states recorded atomically, retried through Redis blips.

A job id is taken by one job for life: the script that records ``queued`` states refuses, for a
whole chunk, any id that exists already (checked and written in one script, so no other call can
slip in between). Each call has a nonce written with its states, so a chunk sent again after a
lost reply (a reset connection, a Redis restart) is recognised as this call's own, and an undo
only ever touches what this call wrote.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import kombu.exceptions
import redis
from hiredis import pack_command
from kombu.exceptions import OperationalError

from config import fastjson, keys, redisconn
from config.lua import lua_script
from config.redisconn import ReplicaWait, SyncState, by_shard, pool_for

T = TypeVar("T")

#: jobs validated and recorded as queued per step of send_many (Redis records one step while the
#: next is validated: only the last step's recording is waited for before the first publish),
#: and jobs (or keys) per script call elsewhere
STATE_CHUNK = 250
#: jobs whose queued states one script records: ~14 µs of Redis each, so that no call holds
#: Redis (every other client of the fleet waits meanwhile) for much more than a millisecond
SCRIPT_JOBS = 64

#: Redis (and broker) errors that a new attempt may get past: a restart (BusyLoadingError is a
#: ConnectionError), a reset connection, a timeout, a publish whose pipeline failed
TRANSIENT: tuple[type[BaseException], ...] = (
    *redisconn.TRANSIENT,
    OperationalError,
    # a Redis publish pipeline that failed (kombu >= 5.7; not in its type stubs)
    getattr(kombu.exceptions, "BatchPublishError", OperationalError),
    ConnectionError,
    TimeoutError,
)


def as_text(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value


def is_transient(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is an error of Redis or the broker worth retrying."""
    while exc is not None:
        if isinstance(exc, TRANSIENT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class Backoff:
    """Waits between attempts (50 ms doubling to 1 s) until a deadline."""

    def __init__(self, bound: float) -> None:
        self.deadline = time.monotonic() + bound
        self.delay = 0.05

    def wait(self, exc: BaseException) -> None:
        """Sleep before the next attempt, or re-raise ``exc`` when it is not transient or the
        bound is spent."""
        if not is_transient(exc) or time.monotonic() + self.delay > self.deadline:
            raise exc
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 1.0)


def retrying(call: Callable[[], T], backoff: Backoff) -> T:
    """``call()``, tried again after each transient error until ``backoff``'s deadline."""
    while True:
        try:
            return call()
        except Exception as exc:  # Backoff.wait re-raises what is not transient
            backoff.wait(exc)


QUEUED = lua_script("producers", "queued")

UNDO = lua_script("producers", "undo")


def ttl_until_due(ttl: float, due: float | None, now: float) -> int:
    """Seconds a job's state and payload must live: ``ttl`` after it is due (never less)."""
    return int(ttl + max((due or now) - now, 0.0)) + 1


class QueuedStates:
    """Records the queued state of jobs in Redis, without waiting for Redis in between.

    One script call per ``SCRIPT_JOBS`` jobs (of one shard on a Redis Cluster), its fields in
    one JSON argument, packed by hiredis (redis-py packs each argument in Python), pipelined on
    a connection of its own per server; the replies are read by :meth:`confirm`. A chunk whose
    reply was lost is sent again (the nonce makes that safe) until ``backoff``'s deadline.
    """

    def __init__(
        self, client: SyncState, now: float, backoff: Backoff, wait: ReplicaWait | None = None
    ) -> None:
        self._client = client
        self._wait = wait
        self._conns: dict[int, tuple[Any, Any]] = {}  # id(pool) -> (pool, pipelined connection)
        self._now = repr(now)
        self.nonce = os.urandom(16).hex()  # a uuid4 costs 6x as much
        self._backoff = backoff
        # (ids, packed command, the pool of the server it goes to, the WAIT packed after it)
        self._chunks: list[tuple[list[str], bytes, Any, ReplicaWait | None]] = []
        self._sent = 0  # chunks written on their pipelined connections
        self._read = 0  # chunks whose reply was read
        self.taken: list[str] = []  # ids that belong to other jobs (nothing of their chunk written)

    def send(self, jobs: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Record (id, fields) of each job: owner, channel, subject, identity, recipients, ttl."""
        for group in by_shard(self._client, jobs, lambda job: keys.shard(job[0])):
            for start in range(0, len(group), SCRIPT_JOBS):
                self._send(group[start : start + SCRIPT_JOBS])

    def _send(self, jobs: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        names = [keys.job(i) for i, _ in jobs]
        fields = fastjson.dumps([f for _, f in jobs])
        command: tuple[Any, ...] = ("EVAL", QUEUED, len(names), *names, self._now, self.nonce)
        packed = pack_command((*command, fields))
        wait = self._wait.on(self._client, names[0]) if self._wait is not None else None
        if wait is not None:
            packed += wait.packed()  # kept by a replica before it counts
        pool = pool_for(self._client, names[0])
        self._chunks.append(([i for i, _ in jobs], packed, pool, wait))
        if self._sent < len(self._chunks) - 1:
            return  # a pipelined connection failed earlier: confirm() sends the rest
        try:
            conn = self._conn(pool)
            conn.send_packed_command([packed], check_health=self._sent == 0)
        except redis.RedisError:
            self._drop()
            return
        self._sent += 1

    def confirm(self) -> list[str]:
        """Every chunk recorded (each sent again after a transient error); returns the ids that
        were taken. Raises when Redis stays away past the deadline."""
        try:
            while self._read < self._sent:
                _, _, pool, wait = self._chunks[self._read]
                self._taken(self._read, _replies(self._conn(pool), wait))
                self._read += 1
        except redis.RedisError as exc:
            self._drop()
            if not is_transient(exc):
                raise
        for pool, conn in self._conns.values():
            pool.release(conn)
        self._conns.clear()
        while self._read < len(self._chunks):
            _, packed, pool, wait = self._chunks[self._read]
            run = functools.partial(self._run, pool, packed, wait)
            self._taken(self._read, retrying(run, self._backoff))
            self._read += 1
        return self.taken

    def close(self) -> None:
        """Done, after a failure: the connections released (their unread replies dropped)."""
        self._drop()

    def _conn(self, pool: Any) -> Any:
        found = self._conns.get(id(pool))
        if found is None:
            found = self._conns[id(pool)] = (pool, pool.get_connection())
        return found[1]

    def _taken(self, chunk: int, reply: Any) -> None:
        ids = self._chunks[chunk][0]
        self.taken += [ids[int(i) - 1] for i in reply or ()]

    @staticmethod
    def _run(pool: Any, packed: bytes, wait: ReplicaWait | None) -> Any:
        conn: Any = pool.get_connection()
        try:
            conn.send_packed_command([packed])
            return _replies(conn, wait)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _drop(self) -> None:
        for pool, conn in self._conns.values():
            conn.disconnect()  # replies left unread: not reusable
            pool.release(conn)
        self._conns.clear()
        self._sent = self._read  # what was sent and not read is sent again by confirm()


def _replies(conn: Any, wait: ReplicaWait | None) -> Any:
    """The script's reply read from ``conn``, and its WAIT's when one was packed after it."""
    reply = conn.read_response()
    if wait is not None:
        wait.check(conn.read_response())
    return reply


def undo(
    client: SyncState, job_ids: Sequence[str], nonce: str, withdrawn_ttl: int, backoff: Backoff
) -> set[str]:
    """Undo what the call with ``nonce`` recorded for ``job_ids`` (see ``UNDO``)."""
    kept: set[str] = set()
    for n, group in keys.per_shard(job_ids).items():
        for start in range(0, len(group), STATE_CHUNK):
            ids = group[start : start + STATE_CHUNK]
            names = [keys.schedule(n)]
            for i in ids:
                names += [keys.job(i), keys.payload(i)]
            call = functools.partial(
                client.eval, UNDO, len(names), *names, nonce, withdrawn_ttl, *ids
            )
            kept |= {as_text(x) for x in retrying(call, backoff) or ()}
    return kept
