"""The Celery tasks. Thin: decode, call the delivery, return counts. No SMTP in here."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from celery import Celery, Task
from celery.exceptions import Reject

from config.celery import CHANNELS, DELIVER_TASK
from config.retry import INFRA_RETRY_MAX_DELAY

log = structlog.get_logger("maildispatch.tasks")


# a batch that fails as a whole is retried, never dropped; per-job claims make the rerun
# harmless. The backoff is slept here, not left to a Celery countdown: an ETA message would wait
# in the broker (early redelivery on Redis, a blocked consumer on RabbitMQ quorum queues).


def _deliver_task(channel: str) -> Callable[..., dict[str, int]]:
    def deliver(self: Task, jobs: Any = None, *extra: Any, **unexpected: Any) -> dict[str, int]:
        if extra or unexpected:  # poison: wrong arguments; rejected once, never retried
            return _poison(channel, "unexpected task arguments")
        try:
            return _run(channel, jobs)
        except Exception as exc:
            delay = min(INFRA_RETRY_MAX_DELAY, 2 ** min(self.request.retries, 5))
            count = len(jobs) if isinstance(jobs, list) else 0
            log.exception("batch_crashed", channel=channel, count=count, retry_in_s=delay)
            time.sleep(delay)
            try:
                # the retry's task-sent event shows what the message showed, not the jobs
                shown = getattr(self.request, "argsrepr", None)
                raise self.retry(  # type: ignore[call-arg]  # celery-types lacks **options
                    exc=exc, countdown=0, max_retries=None, argsrepr=shown, kwargsrepr="{}"
                ) from exc
            except Reject as rejected:  # the retry could not be published: requeue this copy
                raise Reject(exc, requeue=True) from rejected

    deliver.__name__ = f"deliver_{channel}"
    deliver.__qualname__ = deliver.__name__
    return deliver


def _run(channel: str, jobs: Any) -> dict[str, int]:
    from worker.runtime import runtime

    rt = runtime()
    if not isinstance(jobs, list):  # poison: rejected once, logged, counted; never retried
        return _poison(channel, "jobs is not a list")
    delivery = rt.delivery(channel)
    # registered as in flight while it runs, so a dead worker's jobs come back (worker/jobs/inflight.py)
    summary = rt.run(rt.states.inflight.run(jobs, lambda: delivery.run_batch(jobs)))
    log.info("batch_done", channel=channel, count=len(jobs), **summary.as_dict())
    return summary.as_dict()


def _poison(channel: str, reason: str) -> dict[str, int]:
    from worker.runtime import runtime

    log.error("batch_invalid", channel=channel, reason=reason)
    rt = runtime()
    rt.run(rt.states.count("poison_batches"))
    return {"invalid": 1}


def register(app: Celery) -> dict[str, Any]:
    """The delivery tasks on ``app``, one per channel (worker/app.py calls this). A worker hands
    their messages to its stream (worker/consume/stream.py), which delivers many at once; the task body
    runs only where a task is applied directly (``task.apply``)."""
    return {
        channel: app.task(
            name=DELIVER_TASK[channel],
            bind=True,
            Strategy="worker.consume.hooks:strategy",
            channel=channel,
        )(_deliver_task(channel))
        for channel in CHANNELS
    }
