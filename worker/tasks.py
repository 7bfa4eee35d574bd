"""The Celery tasks. Thin: decode, call the delivery, return counts. No SMTP in here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from celery import Task

from config.celery import CHANNELS, DELIVER_TASK
from worker.app import app

log = structlog.get_logger("maildispatch.tasks")


def _deliver_task(channel: str) -> Callable[..., dict[str, int]]:
    def deliver(self: Task, jobs: list[dict[str, Any]]) -> dict[str, int]:
        from worker.runtime import runtime

        if not isinstance(jobs, list):  # poison: rejected once, logged, counted; never retried
            log.error("batch_invalid", channel=channel, reason="jobs is not a list")
            rt = runtime()
            rt.run(rt.states.count("poison_batches"))
            return {"invalid": 1}
        rt = runtime()
        summary = rt.run(rt.delivery(channel).run_batch(jobs))
        log.info("batch_done", channel=channel, count=len(jobs), **summary.as_dict())
        return summary.as_dict()

    deliver.__name__ = f"deliver_{channel}"
    deliver.__qualname__ = deliver.__name__
    return deliver


deliver_tasks = {
    channel: app.task(name=DELIVER_TASK[channel], bind=True)(_deliver_task(channel))
    for channel in CHANNELS
}
