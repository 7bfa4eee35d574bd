"""What happened to a job, as the services that sent it see it: one event per outcome.

Events are entries of Redis streams, one per shard of the job state (``keys.events(n)``, all
of them ``keys.EVENTS``; a job's events go to its shard's, ``keys.events_of``, so they stay in
order), written with the state change they describe (in the same script or transaction where
there is one), trimmed past ``MAILDISPATCH_EVENTS_RETENTION``. The feed (``GET /v1/events``)
reads them in order, merging the streams by entry id; each stream entry holds the owner
(``o``, for the feed's filter) and the event's JSON (``d``):

    {"id": "evt_...", "type": "message.sent", "timestamp": "<RFC 3339>",
     "data": {"job_id", "owner", "channel", "recipients", "metadata", ...}}

An event's id is derived from what it reports (the job, its attempt, the type, the recipients
it names), not from when it was written: an outcome written twice (a worker that died between
a Failed Send row and the job's state, a bounce report ingested again) is the same event twice,
with the same id, which receivers deduplicate. Writers live on both sides (a producer's cancel,
a worker's outcomes, bounce ingest), hence here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

import redis

from config import fastjson, keys


class EventType(StrEnum):
    """The types of ``../shared/DESIGN.md`` §10."""

    SENT = "message.sent"
    DEFERRED = "message.deferred"
    RETRYING = "message.retrying"
    FAILED = "message.failed"
    BOUNCED = "message.bounced"
    COMPLAINED = "message.complained"
    UNSUBSCRIBED = "message.unsubscribed"
    CANCELLED = "message.cancelled"


EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)


def event_id(job_id: str, kind: str, *parts: object) -> str:
    """The id of the event of ``kind`` for a job, distinguished by ``parts`` (an attempt,
    recipients): the same outcome always gets the same id."""
    digest = hashlib.blake2b(
        "\x1f".join([job_id, kind, *(str(p) for p in parts)]).encode(), digest_size=12
    ).hexdigest()
    return f"evt_{digest}"


def rfc3339(at: float) -> str:
    """A UTC time as RFC 3339 with milliseconds (``2026-12-06T06:00:00.000Z``)."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_data(
    job_id: str,
    owner: str,
    channel: str,
    recipients: Iterable[str],
    metadata: Mapping[str, Any] | None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``data`` every event about a job carries, plus what its type adds."""
    data: dict[str, Any] = {
        "job_id": job_id,
        "owner": owner,
        "channel": channel,
        "recipients": list(recipients),
        "metadata": dict(metadata or {}),
    }
    data.update(extra)  # every field of the type, null when unknown: one shape per type
    return data


def encode(kind: EventType, data: dict[str, Any], *parts: object, at: float | None = None) -> str:
    """An event's JSON, its id derived from the job, the type and ``parts``."""
    return fastjson.dumps_text(
        {
            "id": event_id(str(data["job_id"]), kind.value, *parts),
            "type": kind.value,
            "timestamp": rfc3339(time.time() if at is None else at),
            "data": data,
        }
    )


def add_events(pipe: Any, job_id: str, events: Iterable[tuple[str, str]], retention: float) -> None:
    """Queue the write of each event (owner, JSON) about a job on a redis-py pipeline, sync or
    async, to the job's shard's stream trimmed past ``retention``; nothing when ``retention`` is
    0 (events off)."""
    if retention <= 0:
        return
    minimum = min_id(retention)
    stream = keys.events_of(job_id)
    for owner, body in events:
        pipe.xadd(stream, {"o": owner, "d": body}, minid=minimum, approximate=False)


async def trim(client: Any, retention: float) -> None:
    """Drop entries past ``retention`` from every shard's stream (a redis.asyncio client).
    Writes trim their own stream; this bounds the streams that see no writes for a while too."""
    if retention <= 0:
        return
    minimum = min_id(retention)
    pipe = client.pipeline(transaction=False)
    for stream in keys.EVENTS:
        pipe.xtrim(stream, minid=minimum, approximate=False)
    await pipe.execute()


def min_id(retention: float, now: float | None = None) -> str:
    """The stream id below which entries are past retention (``XADD ... MINID``, exact: each
    write drops what has fallen out)."""
    return str(int(((time.time() if now is None else now) - retention) * 1000))


class GroupRead(NamedTuple):
    """What :func:`read_group` read."""

    #: (stream, entry id, fields), each stream's entries in order
    entries: list[tuple[str, bytes, dict[bytes, bytes]]]
    #: a stream gave as many as one call takes from it: more may be waiting
    more: bool


async def read_group(
    client: Any,
    group: str,
    consumer: str,
    *,
    start: str,
    count: int,
    idle_ms: int,
    streams: Sequence[str] = keys.EVENTS,
) -> GroupRead:
    """Up to ``count`` entries for a consumer group of ``streams`` (every shard's by default; a
    redis.asyncio client, single or cluster), at most an equal share of ``count`` from each:
    entries another consumer read and left for ``idle_ms`` (it died, or put them back) first,
    then new ones. A stream's group, when there is none yet, starts after ``start``.
    Acknowledge with :func:`ack`.

    The readers of the streams (webhooks' fan-out, the message history) each have their group:
    each sees every event, and several processes share one group's work. One command per
    stream (a cluster takes one stream a command), two pipelines in all."""
    share = max(1, count // max(len(streams), 1))
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xautoclaim(stream, group, consumer, idle_ms, "0-0", count=share)
    got: dict[str, list[Any]] = {}
    for stream, reply in zip(streams, await pipe.execute(raise_on_error=False), strict=True):
        if _no_group(reply):
            await _create_group(client, stream, group, start)
            reply = [b"0-0", []]  # a new group has nothing pending
        got[stream] = [e for e in reply[1] if e[1]]  # trimmed ones come back empty
    short = [s for s in streams if len(got[s]) < share]
    pipe = client.pipeline(transaction=False)
    for stream in short:
        pipe.xreadgroup(group, consumer, {stream: ">"}, count=share - len(got[stream]))
    for stream, reply in zip(short, await pipe.execute(raise_on_error=False), strict=True):
        if _no_group(reply):  # gone since (XGROUP DESTROY): made again, read next call
            await _create_group(client, stream, group, start)
            continue
        got[stream] += [e for _, entries in reply or () for e in entries]
    return GroupRead(
        entries=[(s, i, f) for s in streams for i, f in got[s]],
        more=any(len(got[s]) >= share for s in streams),
    )


def ack(pipe: Any, group: str, done: Iterable[tuple[str, bytes]]) -> None:
    """Queue on a pipeline the ``XACK`` of the entries (stream, id) :func:`read_group` gave,
    one command per stream."""
    by_stream: dict[str, list[bytes]] = {}
    for stream, entry_id in done:
        by_stream.setdefault(stream, []).append(entry_id)
    for stream, ids in by_stream.items():
        pipe.xack(stream, group, *ids)


def _no_group(reply: Any) -> bool:
    """Whether a pipeline's reply is the error of a missing group; raises any other error."""
    if not isinstance(reply, Exception):
        return False
    if isinstance(reply, redis.ResponseError) and "NOGROUP" in str(reply):
        return True
    raise reply


async def _create_group(client: Any, stream: str, group: str, start: str) -> None:
    try:
        await client.xgroup_create(stream, group, id=start, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):  # another process made it first
            raise
