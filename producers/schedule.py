"""A producer's writes to the schedule: jobs parked until their ``send_at``, and cancels.

A scheduled job's payload and state live until it is due plus the TTL; the scheduler publishes
it then (worker/jobs/scheduler.py). A cancel takes a job out of the schedule (or marks one still
on the broker's queue, which the worker then skips) and writes its ``message.cancelled``
event, in one script. On a Redis Cluster both are on a replica before the call answers.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from pydantic import ValidationError

from config import keys
from config.events import EventType, encode, job_data, min_id
from config.lua import lua_script
from config.redisconn import ReplicaWait, SyncState, by_shard, exchange
from producers.enqueue import as_text, ttl_until_due
from producers.job import SendJob
from producers.wire import job_wire

_CANCEL = lua_script("producers", "cancel")

_PARK = lua_script("producers", "park")


def park(
    client: SyncState, jobs: list[SendJob], now: float, job_ttl: float, wait: ReplicaWait | None
) -> None:
    """Park jobs with a future ``send_at``: payload and state live until due plus the TTL.
    Each job only while still ``queued`` (park.lua): one cancelled meanwhile stays cancelled."""
    for group in by_shard(client, jobs, lambda j: keys.shard(str(j.id))):
        names: list[str] = []
        args: list[Any] = []
        for j in group:
            assert j.send_at is not None
            job_id = str(j.id)
            due = repr(j.send_at.timestamp())
            names += [keys.job(job_id), keys.payload(job_id), keys.schedule_of(job_id)]
            args += [job_id, due, ttl_until_due(job_ttl, float(due), now), json.dumps(job_wire(j))]
        call = ("EVAL", _PARK, len(names), *names, *args)
        exchange(client, names[0], [call], wait)


def cancel_job(
    client: SyncState, job_id: str, retention: float, wait: ReplicaWait | None
) -> str | None:
    """Cancel a job that has not been sent yet; its state after the call (see
    ``Dispatcher.cancel``). Counted once per job as ``jobs_cancelled`` (/metrics)."""
    names = (
        keys.job(job_id),
        keys.schedule_of(job_id),
        keys.payload(job_id),
        keys.events_of(job_id),
    )
    args: list[Any] = [time.time(), job_id, min_id(retention)]
    if retention > 0:
        args += _cancel_event(client, job_id)
    call = ("EVAL", _CANCEL, len(names), *names, *args)
    state = as_text(exchange(client, names[0], [call], wait)[0])
    if state.startswith("+"):  # this call cancelled it
        state = state[1:]
        client.hincrby(keys.COUNTERS, "jobs_cancelled", 1)
    return state or None


def _cancel_event(client: SyncState, job_id: str) -> list[str]:
    """(owner, JSON) of the job's ``message.cancelled`` event; none for an unknown job. The
    recipients and metadata are known while the job waits in the schedule (a retry, a
    ``send_at``, a deferral); a job still on the broker's queue reports neither."""
    pipe = client.pipeline(transaction=False)
    pipe.hmget(keys.job(job_id), "owner", "channel")
    pipe.get(keys.payload(job_id))
    (owner, channel), payload = pipe.execute()
    if owner is None:
        return []
    recipients: list[str] = []
    metadata: dict[str, Any] = {}
    if payload:
        with contextlib.suppress(ValueError, ValidationError):
            job = SendJob.model_validate(json.loads(payload))
            recipients, metadata = list(job.recipients), dict(job.metadata)
    data = job_data(job_id, as_text(owner), as_text(channel or b""), recipients, metadata)
    return [as_text(owner), encode(EventType.CANCELLED, data)]
