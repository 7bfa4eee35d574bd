"""Publishing batch tasks so that, whatever fails, the jobs on the queue are known.

On Redis, kombu writes messages in a pipeline; a pipeline that fails leaves it unknown which of
its messages were written. Here the pipeline is flushed every ``pipeline`` messages (kombu's own
flush point set beyond), so the tasks known to be on the queue are exactly those flushed. A
transient error is retried from the first task not known to be written (a task published twice
is harmless: claims deliver a job once) until the call's retry bound; then
:class:`NotPublished` names the jobs of every task not known to be out. RabbitMQ publishes each
message at once, with its confirm, and the flush does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import structlog
from celery import Celery
from kombu.transport import redis as kombu_redis

from producers.enqueue import Backoff

log = structlog.get_logger("maildispatch.producer")

#: one batch task: (channel, its jobs), each job an entry whose first item is its id
Task = tuple[str, Sequence[Sequence[Any]]]
T = TypeVar("T")


class NotPublished(Exception):
    """Publishing failed past the retry bound; ``job_ids`` are the jobs not known to be out."""

    def __init__(self, job_ids: set[str]) -> None:
        super().__init__(f"{len(job_ids)} job(s) not published")
        self.job_ids = job_ids


class _Interrupted(Exception):
    def __init__(self, done: int, error: Exception) -> None:
        super().__init__(str(error))
        self.done = done
        self.error = error


def publish_all(
    celery: Celery,
    tasks: Sequence[Task],
    send: Callable[[Any, str, Sequence[Sequence[Any]]], None],
    progress: Callable[[int], None] | None,
    backoff: Backoff,
    pipeline: int,
) -> None:
    """Publish every task with ``send(producer, channel, jobs)``; see the module's docstring."""
    done = 0
    while done < len(tasks):
        try:
            done = _publish_from(celery, tasks, done, send, progress, pipeline)
        except _Interrupted as stop:
            done = stop.done
            try:
                backoff.wait(stop.error)
            except BaseException:
                log.warning("publish_failed", batches=len(tasks), published=done)
                raise NotPublished({str(e[0]) for _, jobs in tasks[done:] for e in jobs}) from (
                    stop.error
                )


def _publish_from(
    celery: Celery,
    tasks: Sequence[Task],
    start: int,
    send: Callable[[Any, str, Sequence[Sequence[Any]]], None],
    progress: Callable[[int], None] | None,
    pipeline: int,
) -> int:
    """Publish ``tasks[start:]``; returns how many are written (all), or raises _Interrupted
    with how many were known to be before the error. ``progress`` hears of jobs written."""
    done = start
    try:
        with (
            celery.producer_or_acquire() as producer,
            producer.batch(max_size=pipeline * 4) as batch,
        ):
            for n in range(start, len(tasks)):
                channel, jobs = tasks[n]
                send(producer, channel, jobs)
                if (n + 1 - start) % pipeline == 0 or n + 1 == len(tasks):
                    batch.flush()
                    if progress:
                        progress(sum(len(j) for _, j in tasks[done : n + 1]))
                    done = n + 1
    except Exception as exc:
        raise _Interrupted(done, exc) from exc
    return done


#: the Redis commands kombu's Redis transport ends a publish with (its ``_put``, ``_put_fanout``)
CAPTURABLE = frozenset({"lpush", "publish", "pexpire"})


class _Capture:
    """Stands in for kombu's Redis publish batch (kombu >= 5.7, ``Producer.batch``): each message
    published through the producer is prepared and routed by kombu as usual, and the Redis
    commands that would end it are kept here instead of being run."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def publish(self, channel: Any, message: Any, **kwargs: Any) -> Any:
        """What the producer calls for each message (kombu's batch state)."""
        return channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args: Any) -> None:
        """What the Redis channel calls with each final command (kombu's ``PublishBatch``)."""
        if name not in CAPTURABLE:
            raise RuntimeError(f"kombu ended a publish with {name!r}: not capturable")
        self.commands.append((name, *args))


def can_capture(producer: Any) -> bool:
    """Whether ``producer`` publishes through kombu's Redis transport with keys as given (no
    ``global_keyprefix``, which its client adds when it runs a command)."""
    channel = producer.channel
    return isinstance(channel, kombu_redis.Channel) and not getattr(channel, "global_keyprefix", "")


@contextlib.contextmanager
def captured(producer: Any) -> Iterator[list[tuple[Any, ...]]]:
    """Inside, ``producer``'s publishes (Celery's task message, its task-sent event) run no
    command: the list yielded receives them (name, args...), for the caller to run in one script
    with what must be written with them. Only where :func:`can_capture` says so."""
    capture = _Capture()
    local = producer._batch_local  # where kombu's Producer looks for its current batch
    previous = getattr(local, "current", None)
    local.current = capture
    try:
        yield capture.commands
    finally:
        if previous is None:
            del local.current
        else:
            local.current = previous
