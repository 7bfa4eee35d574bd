"""The Celery app of the workers: ``celery -A worker.app worker -Q mail.msc``."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

from config.celery import make_celery
from config.settings import ConfigurationError, get_settings
from worker.observe.logging import configure_logging

# Every process (worker, Flower, beat) refuses to start without a secret key: there is no
# built-in default. Checked here, at import, because Celery logs and swallows exceptions
# raised by signal receivers such as worker_init.
try:
    get_settings().require_secret_key()
except ConfigurationError as exc:
    raise SystemExit(f"configuration error: {exc}") from None

app: Celery = make_celery(get_settings(), "maildispatch")
# poison input (not JSON, no task, unknown task) is logged without its body and counted
app.conf.worker_consumer = "worker.consume.poison:PoisonAwareConsumer"
# a warm shutdown waits for the delivery messages the stream holds (worker/consume/stream.py)
app.steps["consumer"].add("worker.consume.hooks:StreamStep")


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    configure_logging(get_settings())


@signals.worker_init.connect
def _check_redis(**_: Any) -> None:
    # appendonly / maxmemory-policy: a loud warning, a refusal with MAILDISPATCH_STRICT_REDIS.
    # Celery logs and swallows a receiver's exceptions, but not SystemExit.
    from producers.redis_safety import RedisUnsafe, startup_check

    configure_logging(get_settings())  # worker_init comes before Celery sets logging up
    from config.settings import ConfigurationError
    from worker.store.hosts import check_and_note

    try:
        startup_check(get_settings())
        check_and_note(get_settings())  # a SQLite store serves one host
    except (RedisUnsafe, ConfigurationError) as exc:
        raise SystemExit(f"configuration error: refusing to start: {exc}") from None


_scheduler: list[Any] = []


@signals.worker_ready.connect
def _start_scheduler(**_: Any) -> None:
    # the main process (not a pool child) runs the retry scheduler and the dead-batch reaper
    if get_settings().embedded_scheduler:
        from worker.jobs.scheduler import EmbeddedScheduler

        scheduler = EmbeddedScheduler(get_settings())
        scheduler.start()
        _scheduler.append(scheduler)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close(**_: Any) -> None:
    from worker.runtime import shutdown_runtime

    while _scheduler:  # only in the process that started it (not in forked pool children)
        scheduler = _scheduler.pop()
        if scheduler.pid == os.getpid():
            scheduler.stop()
    shutdown_runtime()


import worker.consume.poison  # noqa: E402,F401  (counts rejected and unknown task messages)
from worker import tasks as _delivery_tasks  # noqa: E402
from worker.bounces.intake import tasks as _bounce_tasks  # noqa: E402
from worker.webhooks import deliver as _webhook_tasks  # noqa: E402

_delivery_tasks.register(app)
_bounce_tasks.register(app)
_webhook_tasks.register(app)
