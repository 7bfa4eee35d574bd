"""The HTTP intake: ``POST /v1/messages`` (and ``:batch``), ``GET /v1/messages/{id}``, health, metrics.

:func:`create_app` builds a FastAPI app around a :class:`~producers.client.Dispatcher`. This module
imports nothing from ``worker``: what needs the store — API keys, the Failed Sends API and page,
delivery metrics, the database health check — plugs in through :class:`Extensions`, and
``worker/web/app.py`` assembles the full API (``maildispatch api`` serves it).

Errors have one shape: ``{"detail": "...", "errors": [{"index"?, "field", "message"}]}``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import redis
import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from kombu import Connection
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from config.settings import Settings, get_settings
from producers import redis_safety
from producers.client import Dispatcher, IdempotencyInProgress, InvalidJobs
from producers.errors import EnqueueFailed, JobIdsTaken
from producers.job import FieldError, Line200, SendJob, limits

log = structlog.get_logger("maildispatch.http")

MAX_BATCH = 1000
VERSION = "1"


# -- who is calling ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Caller:
    """The calling service, as its API key names it."""

    key_id: int
    name: str
    scopes: frozenset[str]
    #: None: the key acts for every owner; else for this owner only
    owner: str | None = None

    def sees(self, owner: str | None) -> bool:
        """May this caller send as, and read what belongs to, ``owner``?"""
        return self.owner is None or owner == self.owner


class KeyChecker(Protocol):
    """Resolves a presented API key to its caller (None: unknown or revoked)."""

    def check(self, key: str) -> Caller | None:
        """The caller of an active key."""
        ...


@dataclass(frozen=True)
class Extensions:
    """What the operator's side adds to the intake (``worker/web/app.py`` builds one)."""

    keys: KeyChecker
    routers: Sequence[APIRouter] = ()
    #: name -> check: raises when failing; a returned text is a warning
    health: Mapping[str, Callable[[], object]] = field(default_factory=dict)
    collectors: Sequence[Collector] = ()
    #: the Failed Send rows of a job, shown by ``GET /v1/messages/{id}``
    job_failures: Callable[[str], list[dict[str, Any]]] | None = None


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="or `X-API-Key`")


def require(scope: str) -> Callable[..., Caller]:
    """A dependency: a valid API key with ``scope`` (401 without a valid key, 403 without scope)."""

    def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header_key)],
    ) -> Caller:
        key = bearer.credentials if bearer else header
        challenge = {"WWW-Authenticate": 'Bearer realm="maildispatch"'}
        if not key:
            raise HTTPException(401, "an API key is required", headers=challenge)
        caller: Caller | None = request.app.state.keys.check(key)
        if caller is None:
            log.warning("api_key_rejected", path=request.url.path)
            raise HTTPException(401, "invalid or revoked API key", headers=challenge)
        request.state.caller = caller
        if scope not in caller.scopes:
            raise HTTPException(403, f"this API key lacks the {scope!r} scope")
        return caller

    return dependency


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
    """A job's delivery state (job state expires after ``MAILDISPATCH_JOB_TTL``)."""

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
    failed_sends: list[dict[str, Any]] = []


class _Batch(BaseModel):
    jobs: list[SendJob] = Field(min_length=1, max_length=MAX_BATCH)


_IDEMPOTENCY_KEY: TypeAdapter[str] = TypeAdapter(Line200)
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

    status = 422

    def __init__(self, detail: str, errors: list[ErrorItem]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class Taken(Invalid):
    """Job ids that belong to other jobs: answered 409, naming each; nothing was enqueued."""

    status = 409


def taken(exc: JobIdsTaken, batch: bool = False) -> Taken:
    """The 409 of taken job ids."""
    errors = [i for e in exc.errors for i in _items(e.errors, e.index if batch else None)]
    return Taken(f"{len(exc.errors)} job id(s) taken; nothing was enqueued", errors)


class OtherOwner(Invalid):
    """Jobs (or a listing) of an owner the caller's key is not for: answered 403, naming each."""

    status = 403


def read_owner(caller: Caller, owner: str | None) -> str | None:
    """The owner a listing is about: a key for one owner lists that owner's only (``owner`` may
    be left out; another owner is :class:`OtherOwner`). None: every owner."""
    if caller.owner is None:
        return owner
    if owner not in (None, caller.owner):
        message = f"this API key reads only owner {caller.owner!r}"
        raise OtherOwner("another owner", [ErrorItem(field="owner", message=message)])
    return caller.owner


def check_owners(caller: Caller, owners: Sequence[str], batch: bool = False) -> None:
    """Every job's owner is one the caller's key acts for, or :class:`OtherOwner`."""
    if caller.owner is None:
        return
    message = f"this API key sends only for owner {caller.owner!r}"
    errors = [
        ErrorItem(index=i if batch else None, field="owner", message=message)
        for i, owner in enumerate(owners)
        if owner != caller.owner
    ]
    if errors:
        raise OtherOwner(f"{len(errors)} job(s) of another owner; nothing was enqueued", errors)


def _items(errors: Sequence[FieldError], index: int | None = None) -> list[ErrorItem]:
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
            key = _IDEMPOTENCY_KEY.validate_python(idempotency_key)
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
        raise Invalid("invalid job; nothing was enqueued", _items(exc.errors[0].errors)) from None
    except IdempotencyInProgress as exc:
        raise HTTPException(409, str(exc)) from None
    log.info("message_accepted", job_id=str(job_id), owner=job.owner, duplicate=job_id != job.id)
    return Accepted(id=job_id, duplicate=job_id != job.id)


def send_batch(dispatcher: Dispatcher, caller: Caller, body: bytes) -> BatchAccepted:
    """Validate every job of a batch (each once), then enqueue all of them or none."""
    try:
        context = limits(dispatcher.settings.max_recipients)
        jobs = _Batch.model_validate_json(body, context=context).jobs
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
        errors = [i for e in exc.errors for i in _items(e.errors, e.index)]
        raise Invalid(f"{len(exc.errors)} invalid job(s); nothing was enqueued", errors) from None
    except IdempotencyInProgress as exc:
        raise HTTPException(409, str(exc)) from None
    log.info("batch_accepted", count=len(ids), owners=len({j.owner for j in jobs}))
    return BatchAccepted(ids=ids, count=len(ids))


def message_status(
    dispatcher: Dispatcher,
    failures: Callable[[str], list[dict[str, Any]]] | None,
    job_id: str,
    caller: Caller,
) -> MessageStatus:
    """The job's state from Redis, with its Failed Sends when the store is plugged in.

    A job of an owner the caller's key is not for is unknown to it (404, as if it did not exist).
    """
    state = dispatcher.status(job_id) or {}
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
        if state.get("state") in ("retrying", "scheduled")
        else None,
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
    if after != "cancelled":
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


# -- the app -------------------------------------------------------------------------------------
def create_app(
    settings: Settings | None = None,
    extensions: Extensions | None = None,
    dispatcher: Dispatcher | None = None,
) -> FastAPI:
    """The HTTP API: intake routes plus whatever ``extensions`` add."""
    settings = settings or get_settings()
    if extensions is None:
        raise ValueError("the HTTP API needs an API key checker (worker.web.app.create_app)")
    dispatcher = dispatcher or Dispatcher(settings)
    app = FastAPI(
        title="maildispatch",
        version=VERSION,
        description="Enqueue email jobs, read their state and the Failed Sends store.",
    )
    app.state.keys = extensions.keys
    app.state.settings = settings
    registry = CollectorRegistry(auto_describe=False)  # describing would scrape at start
    for collector in extensions.collectors:
        registry.register(collector)
    requests_total = Counter(
        "maildispatch_api_requests",
        "HTTP requests by route and status",
        ["route", "status"],
        registry=registry,
    )
    health: dict[str, Callable[[], object]] = {
        "broker": broker_check(settings),
        "redis": lambda: dispatcher.redis.ping(),
        # appendonly / maxmemory-policy: "warning: ..." (200), or an error when strict (503)
        "redis_persistence": lambda: redis_safety.health_check(settings),
        **extensions.health,
    }
    limit = settings.api_max_body_bytes

    @app.middleware("http")
    async def access_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        requests_total.labels(route, str(response.status_code)).inc()
        caller = getattr(request.state, "caller", None)
        log.info(
            "http_request",
            method=request.method,
            route=route,
            status=response.status_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            caller=caller.name if caller else None,
        )
        return response

    @app.exception_handler(Invalid)
    async def invalid(request: Request, exc: Invalid) -> JSONResponse:
        body = ErrorBody(detail=exc.detail, errors=exc.errors)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=exc.status)

    @app.exception_handler(EnqueueFailed)
    async def enqueue_failed(request: Request, exc: EnqueueFailed) -> JSONResponse:
        body = PartlyEnqueued(
            detail=str(exc), ids=exc.ids, enqueued=exc.enqueued, not_enqueued=exc.not_enqueued
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=503)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            ErrorItem(
                field=".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), message=e["msg"]
            )
            for e in exc.errors()
        ]
        body = ErrorBody(detail="invalid request", errors=errors)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=422)

    single_body = {"schema": {"$ref": "#/components/schemas/SendJob"}}
    batch_body = {
        "schema": {
            "type": "object",
            "required": ["jobs"],
            "properties": {
                "jobs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BATCH,
                    "items": {"$ref": "#/components/schemas/SendJob"},
                }
            },
        }
    }

    @app.post(
        "/v1/messages",
        status_code=202,
        response_model=Accepted,
        responses=ERRORS | IN_PROGRESS,
        tags=["messages"],
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": single_body}}
        },
    )
    async def post_message(
        request: Request,
        response: Response,
        caller: Annotated[Caller, Depends(require("send"))],
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> Accepted:
        """Validate and enqueue one job (a SendJob). The same Idempotency-Key is one job."""
        body = await read_body(request, limit)
        accepted = await run_in_threadpool(send_one, dispatcher, caller, body, idempotency_key)
        response.headers["Location"] = f"/v1/messages/{accepted.id}"
        return accepted

    @app.post(
        "/v1/messages:batch",
        status_code=202,
        response_model=BatchAccepted,
        responses=ERRORS | IN_PROGRESS,
        tags=["messages"],
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": batch_body}}
        },
    )
    async def post_batch(
        request: Request, caller: Annotated[Caller, Depends(require("send"))]
    ) -> BatchAccepted:
        """Validate up to 1,000 jobs, then enqueue all of them, or none if any is invalid."""
        body = await read_body(request, limit)
        return await run_in_threadpool(send_batch, dispatcher, caller, body)

    @app.get(
        "/v1/messages/{job_id}",
        response_model=MessageStatus,
        responses={k: v for k, v in ERRORS.items() if k != 413} | {404: {"model": ErrorBody}},
        tags=["messages"],
    )
    def get_message(
        job_id: uuid.UUID, caller: Annotated[Caller, Depends(require("read"))]
    ) -> MessageStatus:
        """A job's state, channel, attempts and last error, and its Failed Sends."""
        return message_status(dispatcher, extensions.job_failures, str(job_id), caller)

    @app.post(
        "/v1/messages/{job_id}/cancel",
        response_model=Cancelled,
        responses={k: v for k, v in ERRORS.items() if k != 413}
        | {404: {"model": ErrorBody}, 409: {"model": ErrorBody, "description": "too late"}},
        tags=["messages"],
    )
    def post_cancel(
        job_id: uuid.UUID, caller: Annotated[Caller, Depends(require("send"))]
    ) -> Cancelled:
        """Cancel a job that is not sent yet: queued, scheduled (send_at), or waiting for a retry
        or a rate limit. 409 once its delivery has started or ended."""
        return cancel_job(dispatcher, str(job_id), caller)

    @app.get("/healthz", tags=["operations"], responses={503: {"description": "a check failed"}})
    def healthz() -> JSONResponse:
        """Is the broker reachable, and the store; is Redis set to keep data? (no API key needed)"""
        results: dict[str, str] = {}
        for name, check in health.items():
            try:
                note = check()
                results[name] = f"warning: {note}" if isinstance(note, str) else "ok"
            except redis_safety.RedisUnsafe as exc:  # our text: no URL in it
                results[name] = f"error: {exc}"
            except Exception as exc:  # the class only: messages may carry URLs with passwords
                results[name] = f"error: {type(exc).__name__}"
        ok = not any(v.startswith("error") for v in results.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": results},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics (no API key needed: counts only, no owners or addresses)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    for router in extensions.routers:
        app.include_router(router)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with ``SendJob`` (and its parts) as components."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        job = SendJob.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(job.pop("$defs", {}))
        schemas["SendJob"] = job
        app.openapi_schema = document
    return app.openapi_schema
