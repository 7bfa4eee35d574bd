"""Celery's hooks into a delivery worker's consumer: the bootstep that starts the process's
stream (worker/consume/stream.py) and hands it the delivery queues, and the strategy that hands
it the messages kombu's consumer takes on other transports."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import structlog
from celery import bootsteps

from config.celery import PRIORITY_URGENT, is_amqp
from worker.consume.fetch.message import arguments
from worker.consume.stream import QUEUE_CHANNEL, Stream, Ticket

log = structlog.get_logger("maildispatch.stream")


_stream: Stream | None = None
_stream_pid = 0


def stream_for(consumer: Any) -> Stream:
    """This process's stream (one per worker process)."""
    global _stream, _stream_pid
    if _stream is None or _stream_pid != os.getpid():
        _stream = Stream(consumer)
        _stream_pid = os.getpid()
    return _stream


def strategy(task: Any, app: Any, consumer: Any, **_: Any) -> Callable[..., None]:
    """Celery's hook for a delivery task's messages: hand each to the stream, don't run it.

    Used where kombu's consumer takes the messages (a transport other than Redis and RabbitMQ);
    on those the stream's own fetcher takes them (:class:`StreamStep`).
    """
    channel: str = task.channel
    name: str = task.name

    def handle(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **__: Any) -> None:
        stream = stream_for(consumer)
        headers = message.headers or {}
        args, kwargs = arguments(message.payload)
        jobs = args[0] if isinstance(args, list | tuple) and len(args) == 1 else None
        if kwargs or not isinstance(jobs, list):
            log.error("batch_invalid", channel=channel, reason="unexpected task arguments")
            with contextlib.suppress(Exception):
                stream.rt.run(stream.rt.states.count("poison_batches"))
            message.ack()
            return
        properties = getattr(message, "properties", None) or {}
        stream.submit(
            Ticket(
                task_id=str(headers.get("id") or ""),
                name=name,
                channel=channel,
                jobs=jobs,
                urgent=properties.get("priority") == PRIORITY_URGENT,
                retries=int(headers.get("retries") or 0),
                argsrepr=str(headers.get("argsrepr") or "")[:500],
                settle=stream._post,
                message=message,
            )
        )

    return handle


class StreamStep(bootsteps.StartStopStep):
    """Starts the stream's fetcher; a warm shutdown waits for the messages held.

    With Redis or RabbitMQ as the broker the delivery queues this worker was given are taken off
    kombu's consumer and taken by the fetcher (worker/consume/fetch/); other queues (bounces) stay with
    kombu.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, parent: Any) -> None:
        """Move the delivery queues from kombu's consumer to the fetcher (Redis, RabbitMQ)."""
        from config.settings import get_settings

        settings = get_settings()
        if not settings.broker_url.startswith(("redis://", "rediss://")) and not is_amqp(
            settings.broker_url
        ):
            return
        delivery = set(QUEUE_CHANNEL)
        names = [q.name for q in parent.task_consumer.queues if q.name in delivery]
        if not names:
            return
        for name in names:
            parent.task_consumer.cancel_by_queue(name)
        stream = stream_for(parent)
        if stream.fetcher is None:
            stream.start_fetcher(
                settings.broker_url,
                names,
                settings.worker_prefetch,
                2 * settings.worker_jobs,
                settings.batch_size,
            )
            log.info("fetcher_started", queues=names, prefetch=settings.worker_prefetch)

    def shutdown(self, parent: Any) -> None:
        """Deliver what is held (up to the claim lease); what is left comes back by itself."""
        stream = _stream if _stream_pid == os.getpid() else None
        if stream is None or stream.closed:
            return
        from config.settings import get_settings

        lease = get_settings().claim_lease
        fetched = stream.rt.run(stream.stop_fetcher(lease)) if stream.fetcher else True
        stream.rt.loop.call_soon_threadsafe(stream.rt.gate.close)
        held = stream.held
        finished = stream.wait(lambda: stream.held > 0, timeout=lease) and fetched
        stream.close()
        log.info("stream_drained", kombu_messages=held, complete=finished)

    def stop(self, parent: Any) -> None:
        """Stopping the consumer to reconnect (broker restarted) keeps the fetcher, which has a
        connection and retries of its own; only the worker's shutdown drains the stream."""
        from celery.worker import state

        if state.should_stop is not None or state.should_terminate is not None:
            self.shutdown(parent)
