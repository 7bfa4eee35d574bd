"""The Celery tasks. Thin: decode, call the delivery, return counts. No SMTP in here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from celery import Task

from config.celery import CHANNELS, DELIVER_TASK
from worker.app import app

log = structlog.get_logger("maildispatch.tasks")


#: a batch that fails as a whole (Redis or the database unreachable) is retried, never dropped;
#: per-job claims make the rerun harmless. Short countdowns stay far below the visibility timeout.
INFRA_RETRY_MAX_DELAY = 60


def _deliver_task(channel: str) -> Callable[..., dict[str, int]]:
    def deliver(self: Task, jobs: list[dict[str, Any]]) -> dict[str, int]:
        try:
            return _run(channel, jobs)
        except Exception as exc:
            delay = min(INFRA_RETRY_MAX_DELAY, 2 ** min(self.request.retries, 6))
            count = len(jobs) if isinstance(jobs, list) else 0
            log.exception("batch_crashed", channel=channel, count=count, retry_in_s=delay)
            raise self.retry(exc=exc, countdown=delay, max_retries=None) from exc

    deliver.__name__ = f"deliver_{channel}"
    deliver.__qualname__ = deliver.__name__
    return deliver


def _run(channel: str, jobs: list[dict[str, Any]]) -> dict[str, int]:
    from worker.runtime import runtime

    rt = runtime()
    if not isinstance(jobs, list):  # poison: rejected once, logged, counted; never retried
        log.error("batch_invalid", channel=channel, reason="jobs is not a list")
        rt.run(rt.states.count("poison_batches"))
        return {"invalid": 1}
    summary = rt.run(rt.delivery(channel).run_batch(jobs))
    log.info("batch_done", channel=channel, count=len(jobs), **summary.as_dict())
    return summary.as_dict()


deliver_tasks = {
    channel: app.task(name=DELIVER_TASK[channel], bind=True)(_deliver_task(channel))
    for channel in CHANNELS
}
