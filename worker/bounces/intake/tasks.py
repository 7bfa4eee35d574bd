"""The ingest task ``maildispatch.bounces.ingest`` on ``mail.bounces``. Thin: decode, ingest.

One message never holds a worker for long: past ``MAILDISPATCH_BOUNCE_INGEST_SOFT_TIME_LIMIT``
the run stops and the message goes to the dead-letter store (worker/bounces/intake/deadletter.py), as
does one the parser crashed on; past ``..._TIME_LIMIT`` Celery kills the process, and the copy
noted when the run began is moved there by the next ingest.

Only a pool with child processes enforces those limits. The app's default pool is ``solo`` (for
the delivery workers), and Celery cannot tell ``-P prefork`` from no ``-P`` at all, so it
silently kept ``solo`` for the Procfile's ``bounces`` line: a worker that consumes only
``mail.bounces`` is switched to prefork here (``_time_limits_need_prefork``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import redis
import structlog
from celery import Celery, Task, signals
from celery.concurrency import get_implementation
from celery.exceptions import SoftTimeLimitExceeded

from config.celery import BOUNCE_TASK, QUEUE
from config.redisconn import connect
from config.settings import get_settings
from worker.bounces.intake import enqueue  # noqa: F401  (its publish hook hides retried payloads too)
from worker.bounces.intake.deadletter import DeadLetters
from worker.bounces.intake.enqueue import InboundMessage
from worker.bounces.intake.ingest import Ingest

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
            client = connect(settings.state_redis_url, socket_timeout=10, socket_connect_timeout=5)
            _ingest = Ingest(settings, client, open_store(settings.database_url))
            _pid = os.getpid()
        return _ingest


_settings = get_settings()


def _timed_out(exc: BaseException) -> bool:
    """The soft time limit, raised directly or while a cleanup it interrupted failed."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, SoftTimeLimitExceeded):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _sweep_after(hard_limit: float) -> float:
    """How long after its start a run still noted must have been killed: the hard limit (the
    pool kills within a second of it) plus a margin, 5 to 30 s, growing with the limit."""
    return hard_limit + min(30.0, max(5.0, hard_limit))


@signals.worker_init.connect
def _time_limits_need_prefork(sender: Any = None, **_: Any) -> None:
    """A worker of ``mail.bounces`` alone runs the prefork pool: solo enforces no time limit."""
    if sender is None or not hasattr(sender, "pool_cls"):
        return
    consumed = set(sender.app.amqp.queues.consume_from or ())
    solo = get_implementation("solo")
    if consumed != {QUEUE["bounces"]} or get_implementation(sender.pool_cls) is not solo:
        if QUEUE["bounces"] in consumed and get_implementation(sender.pool_cls) is solo:
            log.error("bounce_time_limits_off", why="mail.bounces shares a solo-pool worker")
        return
    sender.pool_cls = get_implementation("prefork")
    log.info("bounce_worker_pool", pool="prefork", why="ingest time limits")


def register(app: Celery) -> Any:
    """The bounce ingest task on ``app`` (worker/app.py calls this)."""
    return app.task(
        name=BOUNCE_TASK,
        bind=True,
        soft_time_limit=round(_settings.bounce_ingest_soft_time_limit),
        time_limit=round(_settings.bounce_ingest_time_limit),
    )(ingest)


def ingest(self: Task, wire: Any) -> dict[str, Any]:
    """Ingest one inbound report (see worker/bounces/intake/ingest.py)."""
    if not isinstance(wire, dict):
        log.error("bounce_invalid", why="payload is not an object")
        return {"result": "dropped", "why": "invalid_payload"}
    worker = _process_ingest()
    dead = DeadLetters(worker.redis)
    try:
        message = InboundMessage.from_wire(wire)
    except ValueError as exc:  # poison: kept for the operator, never retried
        log.error("bounce_invalid", why=str(exc))
        entry = dead.add(wire, "invalid_payload")
        return {"result": "dead", "why": "invalid_payload", "dead_letter": entry}
    task_id = str(self.request.id or "")
    deadline = time.time() + _sweep_after(get_settings().bounce_ingest_time_limit)
    try:
        dead.sweep()  # runs killed by the hard time limit, kept before this one starts
        if task_id and not dead.begin(task_id, wire, deadline):
            log.error("bounce_ingest_killed_repeatedly", size=len(message.raw))
            return {"result": "dead", "why": "killed"}
        outcome = worker.handle(message)
    except Exception as exc:
        if _timed_out(exc):
            # stopped mid-call: a database connection may still be in its command (the rollback
            # on the way out then fails with "another command is already in progress", hiding
            # the time limit), so this process starts again with fresh connections
            worker.store.engine.dispose()
            entry = dead.add(wire, "time_limit", task_id=task_id)
            dead.end(task_id)
            log.error("bounce_ingest_time_limit", size=len(message.raw), dead_letter=entry)
            return {"result": "dead", "why": "time_limit", "dead_letter": entry}
        delay = min(INFRA_RETRY_MAX_DELAY, 2 ** min(self.request.retries, 6))
        log.exception("bounce_ingest_crashed", retry_in_s=delay, size=len(message.raw))
        # back to the broker: the retry is a new run, not a killed one. If Redis is what failed,
        # the sweep may keep a copy too: a re-ingest of it changes nothing
        with contextlib.suppress(redis.RedisError):
            dead.end(task_id)
        raise self.retry(exc=exc, countdown=delay, max_retries=None) from exc
    result = outcome.as_dict()
    if outcome.why == "parse_error":  # a parser bug: kept, to re-ingest once it is fixed
        result |= {"result": "dead", "dead_letter": dead.add(wire, "parse_error")}
    elif outcome.result == "unrecognized" and outcome.why in ("unknown", "bounce"):
        # a report for one of our jobs in which no failed recipient was found: kept for a
        # person to look at (`bounces dead list`), never silently dropped
        result |= {"dead_letter": dead.add(wire, "unrecognized")}
    dead.end(task_id)
    return result
