"""Poison input on a queue: rejected once, logged, counted in ``md:counters``; the worker goes on.

Three layers see it: a body that is not JSON never reaches a task (the consumer's decode fails:
``PoisonAwareConsumer``), a message naming no task or an unknown one is rejected by Celery
(signals below), and a task whose arguments or jobs are malformed is answered by the task itself
(worker/tasks.py, worker/delivery.py). Nothing is requeued, and no body is ever logged: it may
hold a message's content.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
import structlog
from celery import signals
from celery.worker.consumer import Consumer

from config import keys
from config.redisconn import connect
from config.settings import get_settings

log = structlog.get_logger("maildispatch.poison")
_celery_log = logging.getLogger("celery.worker.consumer")

_client: redis.Redis | None = None
_lock = threading.Lock()


def count(name: str) -> None:
    """Bump a poison counter (best effort: counting must never stop the consumer)."""
    global _client
    try:
        with _lock:
            if _client is None:
                _client = connect(get_settings().state_redis_url)
        _client.hincrby(keys.COUNTERS, name, 1)
    except redis.RedisError:
        log.warning("poison_count_failed", counter=name)


def _queue_of(message: Any) -> str | None:
    info = getattr(message, "delivery_info", None) or {}
    return info.get("routing_key")


class PoisonAwareConsumer(Consumer):
    """Celery's consumer, logging undecodable messages without their body and counting them."""

    class Blueprint(Consumer.Blueprint):  # type: ignore[valid-type,misc]
        """Celery's steps less native delayed delivery.

        maildispatch never publishes a countdown or ETA (retries wait in the schedule), so the 28
        quorum queues Celery declares for delayed delivery on RabbitMQ would only be clutter.
        """

        default_steps = [
            s for s in Consumer.Blueprint.default_steps if not s.endswith(":DelayedDelivery")
        ]

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """Acknowledge (drop) a message whose body cannot be decoded."""
        body = getattr(message, "body", b"") or b""
        log.error(
            "message_undecodable",
            queue=_queue_of(message),
            content_type=getattr(message, "content_type", None),
            size=len(body),
            error=type(exc).__name__,
        )
        count("poison_messages")
        message.ack()

    # Celery's own versions of these log the message body: ours log ids and names only

    def on_unknown_message(self, body: Any, message: Any) -> None:
        """Reject a message that is not a task message."""
        message.reject_log_error(_celery_log, self.connection_errors)  # type: ignore[attr-defined]
        signals.task_rejected.send(sender=self, message=message, exc=None)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        """Reject a task message naming a task this worker does not have."""
        headers = getattr(message, "headers", None) or {}
        message.reject_log_error(_celery_log, self.connection_errors)  # type: ignore[attr-defined]
        signals.task_unknown.send(
            sender=self, message=message, exc=exc, name=headers.get("task"), id=headers.get("id")
        )

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        """Reject a task message that cannot be read as a task."""
        message.reject_log_error(_celery_log, self.connection_errors)  # type: ignore[attr-defined]
        signals.task_rejected.send(sender=self, message=message, exc=exc)


@signals.task_rejected.connect
def _rejected(message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
    log.error(
        "message_rejected",
        queue=_queue_of(message),
        error=type(exc).__name__ if exc else "not a task message",
    )
    count("poison_messages")


@signals.task_unknown.connect
def _unknown(message: Any = None, name: str | None = None, **_: Any) -> None:
    log.error("message_unknown_task", queue=_queue_of(message), task=str(name)[:100])
    count("poison_messages")
