"""The work behind each route (runs in the thread pool: Redis and the broker block)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import redis
import structlog
from fastapi import HTTPException, Request
from kombu import Connection
from pydantic import ValidationError

from config.settings import Settings
from config.states import JobState
from producers.client import Dispatcher, IdempotencyInProgress, InvalidJobs
from producers.errors import JobIdsTaken
from producers.job import SendJob, limits
from worker.api.models import (
    IDEMPOTENCY_KEY,
    Accepted,
    BatchAccepted,
    BatchBody,
    Cancelled,
    ErrorItem,
    Invalid,
    MessageStatus,
    error_items,
    field_errors,
    taken,
)
from worker.api.scopes import Caller, check_owners

log = structlog.get_logger("maildispatch.http")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# -- the work behind each route (runs in the thread pool: Redis and the broker block) ------------
def send_one(
    dispatcher: Dispatcher, caller: Caller, body: bytes, idempotency_key: str | None
) -> Accepted:
    """Validate one job (and the header's key) and enqueue it."""
    try:
        job = SendJob.model_validate_json(body, context=limits(dispatcher.settings.max_recipients))
    except ValidationError as exc:
        raise Invalid("invalid job; nothing was enqueued", field_errors(exc)) from None
    check_owners(caller, [job.owner])
    if idempotency_key is not None:
        try:
            key = IDEMPOTENCY_KEY.validate_python(idempotency_key)
        except ValidationError as exc:
            message = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise Invalid(
                "invalid Idempotency-Key header",
                [ErrorItem(field="Idempotency-Key", message=message)],
            ) from None
        if job.idempotency_key not in (None, key):
            problem = "differs from the Idempotency-Key header"
            raise Invalid(
                "conflicting idempotency keys",
                [ErrorItem(field="idempotency_key", message=problem)],
            )
        job = job.model_copy(update={"idempotency_key": key})
    try:
        (job_id,) = dispatcher.send_many([job])
    except JobIdsTaken as exc:
        raise taken(exc) from None
    except InvalidJobs as exc:
        raise Invalid(
            "invalid job; nothing was enqueued", error_items(exc.errors[0].errors)
        ) from None
    except IdempotencyInProgress as exc:
        raise HTTPException(exc.http_status, str(exc)) from None
    log.info("message_accepted", job_id=str(job_id), owner=job.owner, duplicate=job_id != job.id)
    return Accepted(id=job_id, duplicate=job_id != job.id)


def send_batch(dispatcher: Dispatcher, caller: Caller, body: bytes) -> BatchAccepted:
    """Validate every job of a batch (each once), then enqueue all of them or none."""
    try:
        context = limits(dispatcher.settings.max_recipients)
        jobs = BatchBody.model_validate_json(body, context=context).jobs
    except ValidationError as exc:
        errors = field_errors(exc, batch=True)
        bad = len({e.index for e in errors if e.index is not None})
        raise Invalid(f"{bad or 'the'} invalid job(s); nothing was enqueued", errors) from None
    check_owners(caller, [j.owner for j in jobs], batch=True)
    try:
        ids = dispatcher.send_many(jobs)
    except JobIdsTaken as exc:
        raise taken(exc, batch=True) from None
    except InvalidJobs as exc:
        errors = [i for e in exc.errors for i in error_items(e.errors, e.index)]
        raise Invalid(f"{len(exc.errors)} invalid job(s); nothing was enqueued", errors) from None
    except IdempotencyInProgress as exc:
        raise HTTPException(exc.http_status, str(exc)) from None
    log.info("batch_accepted", count=len(ids), owners=len({j.owner for j in jobs}))
    return BatchAccepted(ids=ids, count=len(ids))


def message_status(
    dispatcher: Dispatcher,
    failures: Callable[[str], list[dict[str, Any]]] | None,
    job_id: str,
    caller: Caller,
    history: Callable[[str], dict[str, str] | None] | None = None,
) -> MessageStatus:
    """The job's state from Redis, else from the message history, with its Failed Sends when
    the store is plugged in.

    A job of an owner the caller's key is not for is unknown to it (404, as if it did not exist).
    """
    state = dispatcher.status(job_id) or (history(job_id) if history else None) or {}
    failed = failures(job_id) if failures else []
    owner = state.get("owner") or (failed[0]["owner"] if failed else None)
    failed = [f for f in failed if f["owner"] == owner]  # only ever the job's own owner's rows
    if (not state and not failed) or not caller.sees(owner):
        raise HTTPException(404, f"unknown job {job_id} (or its state expired)")

    def number(name: str) -> float | None:
        return float(state[name]) if state.get(name) not in (None, "", "0") else None

    return MessageStatus(
        id=uuid.UUID(job_id),
        state=state.get("state", "failed"),
        owner=owner,
        channel=state.get("channel") or (failed[0]["channel"] if failed else None),
        attempts=int(state.get("attempts", 0) or 0),
        last_error=state.get("last_error"),
        reply=state.get("reply"),
        enqueued_at=number("enqueued_at"),
        updated_at=number("updated_at"),
        next_attempt_at=number("next_at")
        if state.get("state") in (JobState.RETRYING, JobState.SCHEDULED, JobState.DEFERRED)
        else None,
        subject=state.get("subject"),
        provider_id=state.get("provider_id"),
        from_address=state.get("from_address"),
        from_replaced=state["from_replaced"] == "yes" if "from_replaced" in state else None,
        deferred_by=state.get("deferred_by"),
        delay_note=state.get("delay_note"),
        failed_sends=failed,
    )


def cancel_job(dispatcher: Dispatcher, job_id: str, caller: Caller) -> Cancelled:
    """Cancel a job not sent yet: 404 when unknown (to this caller), 409 when too late."""
    state = dispatcher.status(job_id)
    if state is None or not caller.sees(state.get("owner")):
        raise HTTPException(404, f"unknown job {job_id} (or its state expired)")
    after = dispatcher.cancel(job_id)
    if after is None:
        raise HTTPException(404, f"unknown job {job_id} (or its state expired)")
    if after != JobState.CANCELLED:
        raise HTTPException(409, f"job {job_id} is {after}: too late to cancel")
    log.info("message_cancelled", job_id=job_id, caller=caller.name)
    return Cancelled(id=uuid.UUID(job_id), state=after)


def broker_check(settings: Settings) -> Callable[[], None]:
    """Raises unless the broker answers (Redis: PING; RabbitMQ: a connection)."""

    def check() -> None:
        if settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
            client = redis.Redis.from_url(settings.broker_url, socket_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
            return
        with Connection(settings.broker_url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)

    return check
