"""The intake application: routes, error handlers, health and metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.concurrency import run_in_threadpool

from config.settings import Settings, get_settings
from producers import redis_safety
from producers.client import Dispatcher
from producers.errors import EnqueueFailed
from producers.job import SendJob
from worker.api.bodylimit import BodyLimit
from worker.api.intake import (
    broker_check,
    cancel_job,
    message_status,
    read_body,
    send_batch,
    send_one,
)
from worker.api.models import (
    ERRORS,
    IN_PROGRESS,
    MAX_BATCH,
    VERSION,
    Accepted,
    BatchAccepted,
    Cancelled,
    ErrorBody,
    ErrorItem,
    Invalid,
    MessageStatus,
    PartlyEnqueued,
)
from worker.api.scopes import Caller, Extensions, require

log = structlog.get_logger("maildispatch.http")


# -- the app -------------------------------------------------------------------------------------
def create_app(
    settings: Settings | None = None,
    extensions: Extensions | None = None,
    dispatcher: Dispatcher | None = None,
) -> FastAPI:
    """The HTTP API: intake routes plus whatever ``extensions`` add."""
    settings = settings or get_settings()
    if extensions is None:
        raise ValueError("the HTTP API needs an API key checker (worker.api.app.create_app)")
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
    app.add_middleware(BodyLimit, limit=limit)  # inside the access log: a 413 is logged too

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
        return JSONResponse(body.model_dump(mode="json"), status_code=exc.http_status)

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
        """A job's state, channel, attempts, last error and answer, and its Failed Sends; from
        the message history once its Redis state has expired."""
        return message_status(
            dispatcher, extensions.job_failures, str(job_id), caller, extensions.job_history
        )

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
