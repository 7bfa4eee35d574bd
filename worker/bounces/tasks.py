"""The ingest task ``maildispatch.bounces.ingest`` on ``mail.bounces``. Thin: decode, ingest."""

from __future__ import annotations

import threading
from typing import Any

import redis
import structlog
from celery import Task

from config.celery import BOUNCE_TASK
from config.settings import get_settings
from worker.app import app
from worker.bounces import enqueue  # noqa: F401  (its publish hook hides retried payloads too)
from worker.bounces.enqueue import InboundMessage
from worker.bounces.ingest import Ingest

log = structlog.get_logger("maildispatch.bounces.tasks")

#: Redis or the database unreachable: retried with a short backoff, never dropped (the rows and
#: suppressions are idempotent, so a rerun is harmless)
INFRA_RETRY_MAX_DELAY = 60

_ingest: Ingest | None = None
_pid = 0
_lock = threading.Lock()


def _process_ingest() -> Ingest:
    """This process's Ingest (a fresh one after the prefork pool forked)."""
    global _ingest, _pid
    import os

    with _lock:
        if _ingest is None or _pid != os.getpid():
            from worker.store import open_store
            from worker.store.db import reset_stores

            settings = get_settings()
            if _pid and _pid != os.getpid():
                reset_stores()
            client = redis.Redis.from_url(
                settings.state_redis_url, socket_timeout=10, socket_connect_timeout=5
            )
            _ingest = Ingest(settings, client, open_store(settings.database_url))
            _pid = os.getpid()
        return _ingest


@app.task(name=BOUNCE_TASK, bind=True)
def ingest(self: Task, wire: Any) -> dict[str, Any]:
    """Ingest one inbound report (see worker/bounces/ingest.py)."""
    if not isinstance(wire, dict):
        log.error("bounce_invalid", why="payload is not an object")
        return {"result": "dropped", "why": "invalid_payload"}
    try:
        message = InboundMessage.from_wire(wire)
    except ValueError as exc:  # poison: logged once, never retried
        log.error("bounce_invalid", why=str(exc))
        return {"result": "dropped", "why": "invalid_payload"}
    try:
        outcome = _process_ingest().handle(message)
    except Exception as exc:
        delay = min(INFRA_RETRY_MAX_DELAY, 2 ** min(self.request.retries, 6))
        log.exception("bounce_ingest_crashed", retry_in_s=delay, size=len(message.raw))
        raise self.retry(exc=exc, countdown=delay, max_retries=None) from exc
    return outcome.as_dict()
