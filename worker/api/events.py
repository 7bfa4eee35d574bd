"""``GET /v1/events``: the event feed, for services that pull what happened to their jobs.

The feed reads the event stream (config/events.py) in order from a cursor (the position after
the last event a caller saw); with ``wait`` it holds the request until an event arrives or the
wait is over (a long poll: one ``XREAD BLOCK`` on the API's event loop, no thread held). A key
for one owner sees that owner's events only. An event past ``MAILDISPATCH_EVENTS_RETENTION`` is
gone: a cursor older than that resumes at the oldest event kept.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from config import fastjson, keys
from config.settings import Settings
from producers.enqueue import as_text
from worker.api import ERRORS, Caller, ErrorItem, Invalid, read_owner, require

#: stream entries read per round trip while looking for a caller's events
SCAN = 500


class EventOut(BaseModel):
    """One event, as webhooks deliver it."""

    id: str = Field(description="the same for every delivery of this event: deduplicate on it")
    type: str = Field(description="message.sent, message.failed, ...")
    timestamp: str = Field(description="RFC 3339, UTC")
    data: dict[str, Any] = Field(description="job_id, owner, channel, recipients, metadata, ...")


class EventPage(BaseModel):
    """Events after the cursor, oldest first, and the cursor to read on from."""

    events: list[EventOut]
    next_cursor: str | None = Field(description="pass as ``cursor`` to read what comes next")


def _cursor(value: str | None) -> str | None:
    if value is None:
        return None
    left, sep, right = value.partition("-")
    if not (sep and left.isdigit() and right.isdigit()):
        message = "not a cursor this feed returned"
        raise Invalid("invalid request", [ErrorItem(field="cursor", message=message)])
    return value


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
        last = _cursor(cursor)
        # a connection per request, closed with it: a long poll holds one while it waits
        redis = aioredis.Redis.from_url(settings.state_redis_url)
        try:
            return await _read(redis, owner, last, time.monotonic() + wait, limit)
        finally:
            await redis.aclose()

    return api


async def _read(
    redis: aioredis.Redis, owner: str | None, last: str | None, deadline: float, limit: int
) -> EventPage:
    """Events of ``owner`` (every owner's: None) after ``last``, waiting until ``deadline``."""
    found: list[EventOut] = []
    while True:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(
            keys.EVENTS, min=f"({last}" if last else "-", max="+", count=SCAN
        )  # type: ignore[assignment]  # redis-py's stubs allow None entries; Redis sends none
        for entry_id, fields in entries:
            last = as_text(entry_id)
            if owner is None or as_text(fields[b"o"]) == owner:
                found.append(EventOut(**fastjson.loads(fields[b"d"])))
                if len(found) >= limit:
                    break
        if found:
            break
        if len(entries) == SCAN:
            continue  # a page of other owners' events: read on
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # nothing new yet: wait for the next entry of any owner, then read again
        block = max(1, int(remaining * 1000))  # 0 would block for ever
        await redis.xread({keys.EVENTS: last or "0-0"}, count=1, block=block)
    return EventPage(events=found, next_cursor=last)
