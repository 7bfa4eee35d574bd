"""Jobs found in the schedule without their payload: recorded as Failed Sends, never only logged.

A scheduled job's payload and state live until it is due plus the job TTL (producers/enqueue.py
``ttl_until_due``), so this happens only when Redis lost data (no AOF, an evicting
``maxmemory-policy``, a key deleted by hand). What the job's state still says (owner, channel,
subject, identity) goes into the row; an owner or recipient that is gone is left empty.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from config import keys
from config.channels import DEFAULT_CHANNEL
from config.events import add_events
from config.redisconn import AsyncState, by_shard
from config.states import JobState
from worker.failures.kinds import FailedKind
from worker.failures.rows import failed_send_row
from worker.jobs import events
from worker.store import Store, repo

log = structlog.get_logger("maildispatch.scheduler")

LOST = "the job's payload expired or was lost while it waited in the schedule; not sent"


async def record_lost(
    client: AsyncState,
    store: Callable[[], Store],
    job_ids: Sequence[str],
    ttl: float,
    events_retention: float = 0.0,
) -> None:
    """A Failed Send (kind ``expired``) and the state ``failed`` for each job, row first; the
    state with its ``message.failed`` event (recipients unknown: the payload is gone)."""
    pipe = client.pipeline(transaction=False)
    for i in job_ids:
        pipe.hmget(keys.job(i), "owner", "channel", "subject", "identity")
    found = await pipe.execute()
    rows: list[dict[str, Any]] = [
        failed_send_row(
            job_id=job_id,
            owner=_text(owner),
            channel=_text(channel) or DEFAULT_CHANNEL,
            recipient="",
            kind=FailedKind.EXPIRED,
            reason="lost before delivery",
            hard=False,
            diagnostic=LOST,
            subject=_text(subject),
            identity=_text(identity),
            metadata={},
        )
        for job_id, (owner, channel, subject, identity) in zip(job_ids, found, strict=True)
    ]

    def write() -> None:
        with store().session() as session:
            repo.record_failed_sends(session, rows)

    await asyncio.to_thread(write)
    for group in by_shard(client, rows, lambda row: keys.shard(str(row["job_id"]))):
        pipe = client.pipeline(transaction=True)
        for row in group:
            name = keys.job(str(row["job_id"]))
            state: dict[Any, Any] = {
                "state": JobState.FAILED,
                "last_error": LOST,
                "updated_at": time.time(),
                "owner": row["owner"],
                "channel": row["channel"],
            }
            pipe.hset(name, mapping=state)
            pipe.hdel(name, "next_at")
            pipe.expire(name, int(ttl))
            event = events.failure(
                str(row["job_id"]),
                str(row["owner"]),
                str(row["channel"]),
                [],
                {},
                kind=str(FailedKind.EXPIRED),
                reason=row["reason"],
                hard=False,
                reply_code=None,
                enhanced_status=None,
                diagnostic=LOST,
            )
            add_events(pipe, str(row["job_id"]), [event], events_retention)
        await pipe.execute()
    log.error("scheduled_payload_missing", count=len(rows), job_ids=list(job_ids)[:10])


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
