"""The task-sent events a producer's publishes announce to Flower, buffered and published in
lists on a connection of their own (:class:`SentEvents`)."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

import structlog
from celery import Celery
from celery.events import Event
from celery.events.dispatcher import EventDispatcher

log = structlog.get_logger("maildispatch.producer")


class SentEvents(EventDispatcher):
    """Task-sent events in lists, on a connection of their own without publisher confirms.

    Celery publishes a task's sent event through the producer that published the task: one more
    kombu publish per ``send()``, ~10% of its CPU on Redis, and on RabbitMQ, with
    ``confirm_publish``, one more wait for a confirm (~40 µs of RabbitMQ's CPU). Here the events
    are buffered with Celery's own group buffer and published as one ``task.multi`` list, as a
    worker's are (Flower reads both), ``FLUSH`` seconds after the first, by a timer thread, when
    the producer is closed, or when its process exits. A ``send()`` never waits for an event's
    publish (nor for a lock a publish holds): beyond ``MAX_BUFFERED`` waiting (a broker away),
    events are dropped. Events are best effort, as Celery's own: a list that cannot be published
    is logged and dropped, and the task's publish is never affected.
    """

    #: the longest an event waits (seconds); the most that wait at once
    FLUSH = 0.1
    MAX_BUFFERED = 10_000

    def __init__(self, celery: Celery) -> None:
        connection = celery.connection_for_write(transport_options={"confirm_publish": False})
        super().__init__(
            connection,
            app=celery,
            enabled=True,
            buffer_while_offline=False,
            buffer_group=["task"],
            # never reached (publish stops short of it): Celery would publish in the sender
            buffer_limit=self.MAX_BUFFERED + 1,
            on_send_buffered=self._flush_later,
        )
        self._flushing = threading.Lock()  # one publish of the buffer at a time
        self._timer = threading.Lock()  # guards _timer_pid only, never held during I/O
        self._timer_pid = 0  # the process whose timer is pending (none after a fork)
        _OPEN.add(self)

    def publish(
        self,
        type: str,
        fields: dict[str, Any],
        producer: Any,
        blind: bool = False,
        Event: Callable[..., dict[str, Any]] = Event,
        **kwargs: Any,
    ) -> None:
        """Buffer the event (Celery's sending code calls this with the task's producer)."""
        if self.buffered() >= self.MAX_BUFFERED:
            return  # the broker has not taken them for a while: this one is dropped
        self.send(type, **fields)  # buffered: the "task" group

    def _flush_later(self) -> None:
        with self._timer:
            if self._timer_pid == os.getpid():
                return
            self._timer_pid = os.getpid()
        timer = threading.Timer(self.FLUSH, self.flush_now)
        timer.daemon = True
        timer.start()

    def flush_now(self) -> None:
        """Publish what is buffered."""
        with self._flushing:
            with self._timer:  # an event buffered from here on asks for a timer of its own
                self._timer_pid = 0
            try:
                self.flush()
            except Exception as exc:
                self._drop(exc)

    def buffered(self) -> int:
        """How many events wait to be published."""
        buffers: dict[str, list[Any]] = vars(self)["_group_buffer"]
        return sum(len(events) for events in buffers.values())

    def _drop(self, exc: Exception) -> None:
        log.warning("sent_events_lost", events=self.buffered(), error=type(exc).__name__)
        vars(self)["_group_buffer"].clear()
        with contextlib.suppress(Exception):
            if self.connection is not None:
                self.connection.collect()  # opened again at the next publish
            self.enable()

    def close(self) -> None:
        """Publish what is buffered, then release the connection."""
        _OPEN.discard(self)
        self.flush_now()
        with contextlib.suppress(Exception):
            super().close()
            if self.connection is not None:
                self.connection.release()


#: dispatchers not closed yet: what they buffer is published when the process exits
_OPEN: weakref.WeakSet[SentEvents] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for events in list(_OPEN):
        events.flush_now()
