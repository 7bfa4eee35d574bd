"""Request and response bodies, and the errors the API answers with (one shape:
``{"detail": "...", "errors": [{"index"?, "field", "message"}]}``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from producers.errors import JobIdsTaken
from producers.job import FieldError, InvalidJob, Line200, SendJob

MAX_BATCH = 1000
VERSION = "1"


# -- request and response bodies -----------------------------------------------------------------
class ErrorItem(BaseModel):
    """One invalid field; ``index`` is the job's position in a batch."""

    index: int | None = None
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error response."""

    detail: str
    errors: list[ErrorItem] = []


class Accepted(BaseModel):
    """A job was enqueued (or, for a repeated idempotency key, had been already)."""

    id: uuid.UUID
    duplicate: bool = False


class BatchAccepted(BaseModel):
    """Every job of a batch was enqueued; ids in the order of the jobs."""

    ids: list[uuid.UUID]
    count: int


class PartlyEnqueued(BaseModel):
    """Redis or the broker failed partway (past the retry bound): ``ids`` follows the jobs of
    the request, each job's id when it was enqueued (it will be delivered), null when not."""

    detail: str
    ids: list[uuid.UUID | None]
    enqueued: list[uuid.UUID]
    not_enqueued: list[uuid.UUID]


class Cancelled(BaseModel):
    """A job that will not be sent."""

    id: uuid.UUID
    state: str


class MessageStatus(BaseModel):
    """A job's delivery state: from Redis while it lives (``MAILDISPATCH_JOB_TTL``), then from
    the message history (``MAILDISPATCH_HISTORY_DAYS``) once the job reached an outcome."""

    id: uuid.UUID
    state: str
    owner: str | None = None
    channel: str | None = None
    attempts: int = 0
    last_error: str | None = None
    reply: str | None = None
    enqueued_at: float | None = None
    updated_at: float | None = None
    next_attempt_at: float | None = None
    subject: str | None = None
    #: the relay's queue id or Gmail's message id
    provider_id: str | None = None
    #: the From the message went out with, and whether the channel replaced the identity's
    #: (Gmail sends as the connected account)
    from_address: str | None = None
    from_replaced: bool | None = None
    #: the fleet-wide limit that deferred it last, if one did
    deferred_by: str | None = None
    #: what a delay notice (a DSN that is not a failure) said
    delay_note: str | None = None
    failed_sends: list[dict[str, Any]] = []


class BatchBody(BaseModel):
    jobs: list[SendJob] = Field(min_length=1, max_length=MAX_BATCH)


IDEMPOTENCY_KEY: TypeAdapter[str] = TypeAdapter(Line200)
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no valid API key"},
    403: {"model": ErrorBody, "description": "the key lacks the scope, or is for another owner"},
    413: {"model": ErrorBody, "description": "body larger than MAILDISPATCH_API_MAX_BODY_BYTES"},
    422: {"model": ErrorBody, "description": "invalid input; every invalid field is named"},
}
#: POST /v1/messages and :batch: an Idempotency-Key still being enqueued by another request, or
#: a job id that is another job's; Redis or the broker away past the retry bound
IN_PROGRESS: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "an idempotency key is being enqueued (retry), or a job id is taken "
        "(each named; nothing was enqueued)",
    },
    503: {"model": PartlyEnqueued, "description": "enqueue failed; names the jobs enqueued"},
}


class Invalid(Exception):
    """Invalid input: answered 422 with every invalid field."""

    status = InvalidJob.http_status

    def __init__(self, detail: str, errors: list[ErrorItem]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class Taken(Invalid):
    """Job ids that belong to other jobs: answered 409, naming each; nothing was enqueued."""

    status = JobIdsTaken.http_status


def taken(exc: JobIdsTaken, batch: bool = False) -> Taken:
    """The 409 of taken job ids."""
    errors = [i for e in exc.errors for i in error_items(e.errors, e.index if batch else None)]
    return Taken(f"{len(exc.errors)} job id(s) taken; nothing was enqueued", errors)


class OtherOwner(Invalid):
    """Jobs (or a listing) of an owner the caller's key is not for: answered 403, naming each."""

    status = 403


def error_items(errors: Sequence[FieldError], index: int | None = None) -> list[ErrorItem]:
    return [ErrorItem(index=index, field=e.field, message=e.message) for e in errors]


def field_errors(exc: ValidationError, batch: bool = False) -> list[ErrorItem]:
    """Pydantic's errors as (job index in a batch, field, message)."""
    items = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        index = None
        if batch and len(loc) > 1 and loc[0] == "jobs" and isinstance(loc[1], int):
            index, loc = loc[1], loc[2:]
        message = err["msg"].removeprefix("Value error, ")
        name = ".".join(str(p) for p in loc) or "job"
        if err["type"] == "json_invalid":
            name = "body"
        elif name == "job" and ":" in message:  # a model-level rule names its field first
            name, _, message = message.partition(": ")
        items.append(ErrorItem(index=index, field=name, message=message))
    return items
