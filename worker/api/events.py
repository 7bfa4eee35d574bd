"""``GET /v1/events``: the event feed, for services that pull what happened to their jobs.

The feed reads the event streams (config/events.py, one per shard) in order from a cursor: the
position in each stream after the last event a caller saw. It reads each stream after its own
position and merges them by entry id, so that the feed is in time order and a job's events (in
one stream) in theirs; a stream's position moves past the entries a page consumed only. With
``wait`` it holds the request until an event arrives or the wait is over (a long poll: one
``XREAD BLOCK`` over every stream on the API's event loop, no thread held; a Redis Cluster
takes one stream a command, so there it reads again every ``POLL`` seconds). A key for one
owner sees that owner's events only. An event past ``MAILDISPATCH_EVENTS_RETENTION`` is gone:
a cursor older than that resumes at the oldest event kept.

A cursor is opaque to callers; it is ``1.`` (its version), then the smallest millisecond of the
positions in base 36, then per shard, dot-separated, its position's milliseconds past that one
in base 36 and ``-`` its sequence number in base 36 when not 0, empty for a stream of which
nothing was read yet: ``1.lx2k9f0g.0.3-1..1e...`` (~60 characters while the positions are
close). A stream id ``ms-seq`` (the cursor of the single stream before) is taken as that
position in every stream.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from redis.typing import KeyT, StreamIdT

from config import fastjson, keys
from config.redisconn import AsyncState, clustered, connect_async
from config.settings import Settings
from producers.enqueue import as_text
from worker.api import ERRORS, Caller, ErrorItem, Invalid, read_owner, require

#: entries of one stream read per command, at most; and read per request before a page with
#: some of a caller's events is answered rather than filled
SCAN = 500
#: seconds between two reads of the streams while a long poll waits on a Redis Cluster
POLL = 0.1

#: a stream position: (milliseconds, sequence), as in the stream id ``ms-seq``
Position = tuple[int, int]
ORIGIN: Position = (0, 0)
#: a cursor's position stays within Redis' stream ids (64-bit) and its exclusive ranges
_BOUND = 2**63
_PART = re.compile(r"(?:([0-9a-z]{1,13})(?:-([0-9a-z]{1,13}))?)?")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


class EventOut(BaseModel):
    """One event, as webhooks deliver it."""

    id: str = Field(description="the same for every delivery of this event: deduplicate on it")
    type: str = Field(description="message.sent, message.failed, ...")
    timestamp: str = Field(description="RFC 3339, UTC")
    data: dict[str, Any] = Field(description="job_id, owner, channel, recipients, metadata, ...")


class EventPage(BaseModel):
    """Events after the cursor, oldest first, and the cursor to read on from."""

    events: list[EventOut]
    next_cursor: str | None = Field(
        description="opaque: pass as ``cursor`` to read what comes next"
    )


def _cursor(value: str | None) -> list[Position]:
    """The position in each shard's stream of a cursor (the origin of each without one)."""
    if value is None:
        return [ORIGIN] * keys.SHARDS
    positions = _decode(value)
    if positions is None:
        message = "not a cursor this feed returned"
        raise Invalid("invalid request", [ErrorItem(field="cursor", message=message)])
    return positions


def _decode(value: str) -> list[Position] | None:
    """A cursor's positions; None for what :func:`_encode` does not write."""
    legacy = re.fullmatch(r"([0-9]{1,19})-([0-9]{1,19})", value)
    if legacy:
        at = (int(legacy[1]), int(legacy[2]))
        return [at] * keys.SHARDS if max(at) < _BOUND else None
    fields = value.split(".")
    if (
        len(fields) != keys.SHARDS + 2
        or fields[0] != "1"
        or not re.fullmatch("[0-9a-z]{1,13}", fields[1])
    ):
        return None
    base = int(fields[1], 36)
    positions: list[Position] = []
    for part in fields[2:]:
        match = _PART.fullmatch(part)
        if match is None:
            return None
        if not part:
            positions.append(ORIGIN)
            continue
        at = (base + int(match[1], 36), int(match[2] or "0", 36))
        if max(at) >= _BOUND:
            return None
        positions.append(at)
    return positions


def _encode(positions: list[Position]) -> str:
    """The cursor of the positions (see the module)."""
    base = min((p[0] for p in positions if p != ORIGIN), default=0)
    parts = [
        "" if p == ORIGIN else _b36(p[0] - base) + (f"-{_b36(p[1])}" if p[1] else "")
        for p in positions
    ]
    return ".".join(["1", _b36(base), *parts])


def _b36(n: int) -> str:
    digits = ""
    while True:
        n, rest = divmod(n, 36)
        digits = _B36[rest] + digits
        if not n:
            return digits


def router(settings: Settings) -> APIRouter:
    """The feed over the state Redis of ``settings``."""
    api = APIRouter(prefix="/v1/events", tags=["events"])
    read_errors: dict[int | str, dict[str, Any]] = {
        k: v for k, v in ERRORS.items() if k in (401, 403, 422)
    }

    @api.get("", response_model=EventPage, responses=read_errors)
    async def list_events(
        caller: Annotated[Caller, Depends(require("read"))],
        owner: str | None = None,
        cursor: str | None = None,
        wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for one")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> EventPage:
        """Events after ``cursor`` (from the oldest kept without it), oldest first; with
        ``wait``, held until at least one arrives or ``wait`` seconds have passed.

        A key for one owner reads that owner's events only (``owner`` may be left out).
        """
        owner = read_owner(caller, owner)
        positions = _cursor(cursor)
        # a connection per request, closed with it: a long poll holds one while it waits
        redis = connect_async(settings.state_redis_url)
        try:
            found = await _read(redis, owner, positions, time.monotonic() + wait, limit)
        finally:
            await redis.aclose()
        moved = cursor is not None or any(p != ORIGIN for p in positions)
        return EventPage(events=found, next_cursor=_encode(positions) if moved else None)

    return api


Entry = tuple[Position, dict[bytes, bytes]]


async def _read(
    redis: AsyncState, owner: str | None, positions: list[Position], deadline: float, limit: int
) -> list[EventOut]:
    """Up to ``limit`` events of ``owner`` (every owner's: None) after ``positions``, oldest
    first, waiting until ``deadline`` for one; moves each stream's position past the entries
    consumed (another owner's count as consumed)."""
    found: list[EventOut] = []
    read: list[deque[Entry]] = [deque() for _ in range(keys.SHARDS)]  # read, not consumed yet
    ended = [False] * keys.SHARDS  # its last read gave less than asked: nothing more for now
    # a first read of each stream near its share of a page, doubled while a stream has more
    chunk = [min(SCAN, max(8, 2 * limit // keys.SHARDS))] * keys.SHARDS
    scanned = 0
    while len(found) < limit:
        empty = [n for n in range(keys.SHARDS) if not read[n] and not ended[n]]
        if empty:  # the merge needs the next entry of each stream that may have one
            if found and scanned >= SCAN:
                break  # enough read for one answer: the next page goes on
            scanned += await _fill(redis, empty, positions, chunk, read, ended)
            continue
        heads = [n for n in range(keys.SHARDS) if read[n]]
        if heads:
            n = min(heads, key=lambda n: (read[n][0][0], n))
            positions[n], fields = read[n].popleft()
            if owner is None or as_text(fields[b"o"]) == owner:
                found.append(EventOut(**fastjson.loads(fields[b"d"])))
            continue
        remaining = deadline - time.monotonic()
        if found or remaining <= 0:
            break
        await _wait(redis, positions, remaining)  # then read every stream again
        ended = [False] * keys.SHARDS
    return found


async def _fill(
    redis: AsyncState,
    streams: list[int],
    positions: list[Position],
    chunk: list[int],
    read: list[deque[Entry]],
    ended: list[bool],
) -> int:
    """Read the next entries of the shards' ``streams`` after their positions (one pipeline);
    returns how many."""
    pipe = redis.pipeline(transaction=False)
    for n in streams:
        after = "-" if positions[n] == ORIGIN else f"({positions[n][0]}-{positions[n][1]}"
        pipe.xrange(keys.events(n), min=after, max="+", count=chunk[n])
    got = 0
    for n, entries in zip(streams, await pipe.execute(), strict=True):
        for entry_id, fields in entries:
            ms, _, seq = entry_id.partition(b"-")
            read[n].append(((int(ms), int(seq)), fields))
        got += len(entries)
        ended[n] = len(entries) < chunk[n]
        if not ended[n]:
            chunk[n] = min(SCAN, chunk[n] * 2)
    return got


async def _wait(redis: AsyncState, positions: list[Position], seconds: float) -> None:
    """Until an entry arrives in a stream after its position, or ``seconds`` have passed (on a
    cluster, ``POLL`` seconds at most: the caller reads again)."""
    if clustered(redis):
        await asyncio.sleep(min(POLL, seconds))
        return
    block = max(1, int(seconds * 1000))  # 0 would block for ever
    after: dict[KeyT, StreamIdT] = {
        keys.events(n): f"{ms}-{seq}" for n, (ms, seq) in enumerate(positions)
    }
    await redis.xread(after, count=1, block=block)
