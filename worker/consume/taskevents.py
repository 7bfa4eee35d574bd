"""Task events for Flower from a worker's stream (worker/consume/stream.py), sent in lists.

The events Celery's own worker sends for a task (received, started, succeeded, retried), built
as ``EventDispatcher.send`` builds them but without its per-event work (the UTC offset from
``localtime``, the group lookup): three events a one-job message cost as much as the rest of
its delivery outside SMTP. They are published as one list, as the dispatcher's own flush of a
buffered group does, every ``FLUSH`` seconds or every ``BUFFER`` events, on a connection without
publisher confirms: the flush runs on the worker's event loop, and on RabbitMQ a confirmed
publish would hold the loop (every delivery of the process) for the confirm's round trip.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from celery.utils.time import utcoffset

#: task events are sent in lists, every FLUSH seconds or every BUFFER events
FLUSH = 0.1
BUFFER = 2000


class TaskEvents:
    """A buffer of task events, published by the consumer's event connection."""

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher
        self._buffer: list[dict[str, Any]] = []
        self._utcoffset = utcoffset()

    @classmethod
    def for_consumer(cls, consumer: Any) -> TaskEvents | None:
        """Events of the consumer's worker, or None when its events are off."""
        eventer = consumer.event_dispatcher
        if eventer is None or not eventer.enabled:
            return None
        # best effort, as the producer's task-sent events (producers/sentevents.py)
        connection = consumer.app.connection_for_write(transport_options={"confirm_publish": False})
        return cls(
            consumer.app.events.Dispatcher(
                consumer.ensure_connected(connection),
                hostname=consumer.hostname,
                enabled=True,
                groups=eventer.groups,
            )
        )

    def send(self, kind: str, **fields: Any) -> None:
        """Buffer one event (sent with the others at the next flush)."""
        dispatcher = self.dispatcher
        fields["type"] = kind
        fields["hostname"] = dispatcher.hostname
        fields["utcoffset"] = self._utcoffset
        fields["pid"] = dispatcher.pid
        fields["clock"] = dispatcher.clock.forward()
        fields["timestamp"] = time.time()
        self._buffer.append(fields)
        if len(self._buffer) >= BUFFER:
            self.flush()

    def flush(self) -> None:
        """Publish the buffered events as one list (best effort, as Celery's own flush)."""
        self._utcoffset = utcoffset()
        batch, self._buffer = self._buffer, []
        if batch:
            dispatcher = self.dispatcher
            with contextlib.suppress(Exception), dispatcher.mutex:
                dispatcher._publish(batch, dispatcher.producer, "task.multi")
