"""Outcomes from the event streams into the message history, in batches (a scheduler step).

The event streams (config/events.py, one per shard) are the durable log. Every scheduler of the
fleet reads them through the consumer group ``history``: up to ``BATCH`` entries a call, from
the streams of the shards it holds (below); for each job that an outcome event names, its state
hash is read from Redis (what ``maildispatch status`` shows; a batch's in one script call, one
per shard on a Redis Cluster) and the job's row is written with it, all of a batch in one
transaction, then acknowledged, stream by stream. A row is keyed by its job: an event read
twice (a scheduler that died before its acknowledgement, whose entries another takes after
``SETTLE_MS``) writes the same row again, and an older snapshot of a job's state never
overwrites a newer one.

One process at a time writes a shard's stream (a lease per shard in Redis, ``LEASE_MS``), and
the writers split the 16 shards between them: the standalone ``maildispatch scheduler``
processes when any runs, else the schedulers embedded in delivery workers (each writer notes
itself in a sorted set every tick; with n writers, each takes its run of 16 / n shards, in the
order of their names, and gives up the others). More schedulers, more writers: the history
keeps up with a fleet that grows. An embedded writer works at most ``EMBEDDED_DUTY`` of the
time, so that the delivery loop sharing its process (and its interpreter lock) keeps most of
it: during a burst the history lags, and catches up after.

A ``message.failed`` event is written before the state it reports (the Failed Send row and its
event come first, worker/delivery.py): an entry whose job is not final yet is left unacknowledged
and read again after ``SETTLE_MS``; one older than ``GIVE_UP_S`` (its worker died in between:
the job is tried again, and a later event tells) is written as the event says.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from sqlalchemy import Connection, Dialect
from sqlalchemy.dialects import postgresql, sqlite

from config import keys
from config.events import EventType, ack, read_group
from config.lua import lua_script
from config.redisconn import AsyncState, by_shard
from config.states import FINAL
from producers.enqueue import as_text
from worker.store import Store
from worker.store.models import MessageRecipient, MessageRecord

log = structlog.get_logger("maildispatch.history")

_SNAPSHOT = lua_script("worker.history", "snapshot")
_LEASE = lua_script("worker.history", "writer")

#: how long the writer's lease lasts unless renewed (every tick renews it)
LEASE_MS = 10_000
#: the share of the time an embedded scheduler's writer may spend writing
EMBEDDED_DUTY = 0.25

#: stream entries read per call (one transaction of the store)
BATCH = 500
#: an entry read and not acknowledged for this long is read again (by any scheduler)
SETTLE_MS = 2_000
#: an outcome whose job is still not final this long after the event is written as it says
GIVE_UP_S = 300.0

#: the state an event stands for when the job's hash is gone; None: the event changes no state
#: (a complaint or an unsubscribe after a ``sent``), written only over a hash that exists
EVENT_STATE: dict[str, str | None] = {
    EventType.SENT: "sent",
    EventType.FAILED: "failed",
    EventType.BOUNCED: "bounced",
    EventType.CANCELLED: "cancelled",
    EventType.COMPLAINED: None,
    EventType.UNSUBSCRIBED: None,
}
#: fields of the state hash that are the claim's bookkeeping, not the job's status
INTERNAL = frozenset({"enq", "lease_until", "holder", "pending", "vanished", "slot"})


@dataclass
class Outcome:
    """One job's row, as a batch gathers it (the last event of the job in the batch wins)."""

    job_id: str
    owner: str
    channel: str
    recipients: list[str]
    metadata: dict[str, Any]
    event_type: str
    at: float  # the event's time


def _outcome(fields: dict[bytes, bytes]) -> Outcome | None:
    event = orjson.loads(fields[b"d"])
    if event.get("type") not in EVENT_STATE:
        return None  # retrying, deferred: not an outcome
    data = event["data"]
    at = datetime.fromisoformat(event["timestamp"]).timestamp()
    return Outcome(
        job_id=str(data["job_id"]),
        owner=str(data.get("owner") or ""),
        channel=str(data.get("channel") or ""),
        recipients=[str(r) for r in data.get("recipients") or ()],
        metadata=dict(data.get("metadata") or {}),
        event_type=event["type"],
        at=at,
    )


def _row(outcome: Outcome, state: dict[str, str], now: float) -> dict[str, Any] | None:
    """The job's row, from its state hash when it has one, else from the event; None when
    the event says nothing to record."""
    if state:
        status = {k: v for k, v in state.items() if k not in INTERNAL}
    else:
        fallback = EVENT_STATE[outcome.event_type]
        if fallback is None:
            return None
        status = {"state": fallback, "updated_at": repr(outcome.at)}
    status.setdefault("owner", outcome.owner)
    status.setdefault("channel", outcome.channel)
    updated = float(status.get("updated_at") or outcome.at)
    return {
        "job_id": outcome.job_id,
        "owner": status["owner"],
        "channel": status["channel"],
        "state": status.get("state", "failed"),
        "recipients": outcome.recipients,  # to message_history_recipients
        "job_metadata": outcome.metadata,
        "status": status,
        "finished_at": datetime.fromtimestamp(now, UTC),
        "updated_at": datetime.fromtimestamp(updated, UTC),
    }


def write_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Upsert the rows (a newer snapshot wins; ``finished_at`` and the id stay the first) and
    add their recipients, in the caller's transaction. A job's events name different
    recipients (a ``message.sent`` the accepted ones, a ``message.failed`` the refused ones, a
    ``message.bounced`` one): its recipients are all those any of its events named."""
    if not rows:
        return
    upsert, add = _statements(conn.dialect)
    conn.exec_driver_sql(upsert.sql, upsert.params(rows))
    addresses = {
        (row["job_id"], address): row["owner"] for row in rows for address in row["recipients"]
    }
    if addresses:
        conn.exec_driver_sql(
            add.sql,
            add.params({"job_id": j, "address": a, "owner": o} for (j, a), o in addresses.items()),
        )


#: the history row's columns, as write_rows writes them
_ROW = (
    "job_id",
    "owner",
    "channel",
    "state",
    "job_metadata",
    "status",
    "finished_at",
    "updated_at",
)


@dataclass(frozen=True)
class _Prepared:
    """A statement compiled once for a dialect, its parameters made as its driver takes them.

    SQLAlchemy makes each row's parameters anew with every execution (generic code around the
    same type converters): ~75% of the history's write time, against ~10% for SQLite's own
    work. Here the converters are looked up once and the rows go to ``executemany`` as they are.
    """

    sql: str
    names: tuple[str, ...]  # in the driver's order
    convert: tuple[Callable[[Any], Any] | None, ...]
    positional: bool

    def params(self, rows: Iterable[dict[str, Any]]) -> list[Any]:
        """Each row's parameters: a tuple for a positional driver (SQLite), else a dict."""
        pairs = tuple(zip(self.names, self.convert, strict=True))
        if self.positional:
            return [tuple(row[n] if c is None else c(row[n]) for n, c in pairs) for row in rows]
        return [{n: row[n] if c is None else c(row[n]) for n, c in pairs} for row in rows]


def _prepare(stmt: Any, table: Any, columns: tuple[str, ...], dialect: Dialect) -> _Prepared:
    compiled = stmt.compile(dialect=dialect, column_keys=list(columns))
    names = tuple(compiled.positiontup) if compiled.positional else columns
    convert = tuple(table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names)
    return _Prepared(str(compiled), names, convert, bool(compiled.positional))


@functools.lru_cache(maxsize=8)
def _statements(dialect: Dialect) -> tuple[_Prepared, _Prepared]:
    """The history's upsert and its recipients' insert, for this dialect."""
    make = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    stmt = make(MessageRecord)
    changed = {name: stmt.excluded[name] for name in ("state", "status", "updated_at")}
    upsert = stmt.on_conflict_do_update(
        index_elements=["job_id"],
        set_=changed,
        # a later outcome of the same job; never one of another owner's job that reused the id
        # once the first had left Redis (its state, what refuses a taken id, lives a day)
        where=(stmt.excluded.updated_at >= MessageRecord.updated_at)
        & (stmt.excluded.owner == MessageRecord.owner),
    )
    targets = make(MessageRecipient).on_conflict_do_nothing()
    return (
        _prepare(upsert, MessageRecord.__table__, _ROW, dialect),
        _prepare(targets, MessageRecipient.__table__, ("job_id", "address", "owner"), dialect),
    )


class HistoryWriter:
    """The scheduler's history step (see the module)."""

    def __init__(self, store: Callable[[], Store], consumer: str, embedded: bool = False) -> None:
        self.store = store
        self.consumer = consumer
        self.holder = f"{'embedded' if embedded else 'standalone'}:{consumer}"
        self.duty = EMBEDDED_DUTY if embedded else 1.0
        self._rest_until = 0.0
        self._backlog = False  # the last batch had a stream's full share: more may be waiting
        self.held: set[int] = set()  # the shards whose streams this writer writes now

    async def tick(self, client: AsyncState) -> int:
        """One batch from the shards this writer holds, if it is not resting; returns how many
        entries were acknowledged (0: nothing new, or no shard for this process)."""
        if time.monotonic() < self._rest_until:
            return 0
        await self._share(client)
        if not self.held:
            self._backlog = False  # none of it is this writer's to write now
            return 0
        started = time.monotonic()
        done, self._backlog = await self._batch(client)
        busy = time.monotonic() - started
        self._rest_until = time.monotonic() + busy * (1 / self.duty - 1)
        return done

    def wait_hint(self) -> float:
        """Seconds until this writer wants its next tick (inf: whenever the scheduler likes)."""
        if not self._backlog:
            return float("inf")
        return max(self._rest_until - time.monotonic(), 0.0)

    async def _share(self, client: AsyncState) -> None:
        """Take, keep or give up shards' leases: the fleet's writers (standalone schedulers when
        any runs, else the embedded ones) split the shards in equal runs, by their names'
        order; ``held`` is what this process holds after."""
        now = int(time.time() * 1000)
        pipe = client.pipeline(transaction=False)
        pipe.zadd(keys.HISTORY_WRITERS, {self.holder: now})
        pipe.zremrangebyscore(keys.HISTORY_WRITERS, "-inf", now - LEASE_MS)
        pipe.zrange(keys.HISTORY_WRITERS, 0, -1)
        *_, members = await pipe.execute()
        writers = sorted(as_text(m) for m in members)
        peers = [w for w in writers if w.startswith("standalone:")] or writers
        mine: set[int] = set()
        if self.holder in peers:
            each = -(-keys.SHARDS // len(peers))
            first = peers.index(self.holder) * each
            mine = set(range(first, min(first + each, keys.SHARDS)))
        lease = client.register_script(_LEASE)
        shards = sorted(mine | self.held)
        replies = await asyncio.gather(
            *(
                lease(
                    keys=[keys.history_writer(n)],
                    args=[self.holder, LEASE_MS, "0" if n in mine else "1"],
                )
                for n in shards
            )
        )
        self.held = {n for n, held in zip(shards, replies, strict=True) if held}

    async def _batch(self, client: AsyncState) -> tuple[int, bool]:
        """One batch: how many entries were acknowledged, and whether more may be waiting."""
        read = await read_group(
            client,
            keys.HISTORY_GROUP,
            self.consumer,
            start="0-0",  # a new history takes what the stream still holds
            count=BATCH,
            idle_ms=SETTLE_MS,
            streams=[keys.events(n) for n in sorted(self.held)],
        )
        if not read.entries:
            return 0, False
        outcomes: dict[str, Outcome] = {}
        done: list[tuple[str, bytes]] = []  # (stream, entry id)
        waiting: dict[str, list[tuple[str, bytes]]] = {}
        for stream, entry_id, fields in read.entries:
            outcome = _outcome(fields)
            if outcome is not None:
                earlier = outcomes.get(outcome.job_id)
                if earlier is not None:  # the latest event's type, every event's recipients
                    outcome.recipients = [*earlier.recipients, *outcome.recipients]
                outcomes[outcome.job_id] = outcome
                waiting.setdefault(outcome.job_id, []).append((stream, entry_id))
            else:
                done.append((stream, entry_id))
        rows: list[dict[str, Any]] = []
        if outcomes:
            found = await _snapshots(client, list(outcomes))
            now = time.time()
            for outcome in outcomes.values():
                flat = found[outcome.job_id]
                state = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}
                if state and state.get("state") not in FINAL:  # its state is not written yet
                    if now - outcome.at < GIVE_UP_S:
                        continue  # read again after SETTLE_MS
                    state = {}  # given up waiting: as the event says
                row = _row(outcome, state, now)
                if row is not None:
                    rows.append(row)
                done += waiting[outcome.job_id]
        if rows:
            await asyncio.to_thread(self._write, rows)
        if done:
            pipe = client.pipeline(transaction=False)
            ack(pipe, keys.HISTORY_GROUP, done)
            await pipe.execute()
        return len(done), read.more

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self.store().engine.begin() as conn:
            write_rows(conn, rows)


async def _snapshots(client: AsyncState, job_ids: list[str]) -> dict[str, Any]:
    """Each job's state hash as a flat [field, value, ...] (empty: gone), by job id: one script
    call, or one per shard on a cluster (a script's keys must share a slot)."""
    snapshot = client.register_script(_SNAPSHOT)
    groups = by_shard(client, job_ids, keys.shard)
    replies = await asyncio.gather(*(snapshot(keys=[keys.job(j) for j in g]) for g in groups))
    return {
        job_id: flat
        for group, reply in zip(groups, replies, strict=True)
        for job_id, flat in zip(group, orjson.loads(reply), strict=True)
    }
