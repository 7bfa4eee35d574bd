"""What happened to a job, as the services that sent it see it: one event per outcome.

Events are entries of one Redis stream (``keys.EVENTS``), written with the state change they
describe (in the same script or transaction where there is one), trimmed past
``MAILDISPATCH_EVENTS_RETENTION``. The feed (``GET /v1/events``) reads them in order; each
stream entry holds the owner (``o``, for the feed's filter) and the event's JSON (``d``):

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
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import redis

from config import fastjson
from config.keys import EVENTS as EVENTS_KEY


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


def add_events(pipe: Any, events: Iterable[tuple[str, str]], retention: float) -> None:
    """Queue the write of each event (owner, JSON) on a redis-py pipeline, sync or async, with
    the stream trimmed past ``retention``; nothing when ``retention`` is 0 (events off)."""
    if retention <= 0:
        return
    minimum = min_id(retention)
    for owner, body in events:
        pipe.xadd(EVENTS_KEY, {"o": owner, "d": body}, minid=minimum, approximate=False)


def min_id(retention: float, now: float | None = None) -> str:
    """The stream id below which entries are past retention (``XADD ... MINID``, exact: each
    write drops what has fallen out)."""
    return str(int(((time.time() if now is None else now) - retention) * 1000))


async def read_group(
    client: Any, group: str, consumer: str, *, start: str, count: int, idle_ms: int
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Up to ``count`` entries for a consumer group of the stream (a redis.asyncio client):
    entries another consumer read and left for ``idle_ms`` (it died, or put them back) first,
    then new ones. The group, when there is none yet, starts after ``start``.

    The readers of the stream (webhooks' fan-out, the message history) each have their group:
    each sees every event, and several processes share one group's work."""
    for _ in range(2):
        try:
            claimed = await client.xautoclaim(
                EVENTS_KEY, group, consumer, idle_ms, "0-0", count=count
            )
            entries: list[Any] = [e for e in claimed[1] if e[1]]  # trimmed ones come back empty
            if len(entries) < count:
                reply: Any = await client.xreadgroup(
                    group, consumer, {EVENTS_KEY: ">"}, count=count - len(entries)
                )
                entries += [e for _, stream in reply or () for e in stream]
            return entries
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            try:
                await client.xgroup_create(EVENTS_KEY, group, id=start, mkstream=True)
            except redis.ResponseError as again:
                if "BUSYGROUP" not in str(again):
                    raise
    return []
