"""Delivery task messages taken many at a time and delivered together (DESIGN §4).

Celery's own way runs one task message at a time in a solo worker: a one-job message (a single
``send()``, what services mostly make) then costs a whole message's overhead and waits for the
previous one to finish, ~11 emails/s against a relay 20 ms away. Here a delivery worker takes
its queues' messages itself, on the process's event loop (worker/runtime.py), up to
``MAILDISPATCH_WORKER_PREFETCH`` unacknowledged messages: a fetcher of its own for Redis and for
RabbitMQ (worker/consume/fetch/), or, on another transport, Celery's consumer with a strategy of ours
(Celery's hook for how a received message is handled) that hands each message to the loop. On
the loop, the messages that arrived in one loop iteration become one group: registered in flight
once (a dead worker's jobs come back after the claim lease, worker/jobs/inflight.py), looked up in
the suppression list once, and delivered concurrently, each job still claimed and recorded on
its own (worker/delivery.py). A message is acknowledged once its last job is finished, with the
task events Flower shows (received, started, succeeded / retried), so late acknowledgement,
redelivery of a dead worker's messages and Flower's view all hold as with Celery's consumer.

A group that an infrastructure error crashed (Redis or the database away) is handed back to the
broker after a backoff: its jobs' claims decide what runs again. A warm shutdown stops taking
messages and waits for the ones held (``StreamStep``, worker/consume/hooks.py, with the
strategy: Celery's hooks into the consumer).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog

from config.celery import (
    BATCH_QUEUE,
    DELIVER_TASK,
    PRIORITY_URGENT,
    QUEUE,
    QUEUE_ARGUMENTS,
    is_amqp,
)
from config.retry import INFRA_RETRY_MAX_DELAY
from worker.consume.fetch.amqp import AmqpFetcher
from worker.consume.fetch.message import Fetched, arguments
from worker.consume.fetch.redis import RedisFetcher
from worker.consume.gate import GateClosed
from worker.consume.taskevents import FLUSH, TaskEvents
from worker.prepared import BatchSummary

log = structlog.get_logger("maildispatch.stream")

#: messages that start as a group at once, even inside a gathering window
GATHER_MOST = 64
#: jobs in delivery (between claim and outcome) from which arriving messages are gathered: a
#: busy stream (a relay's latency keeps many open), not the odd send that overlaps another on a
#: fast relay (whose latency the window would only add to). Jobs, not groups: gathering makes
#: fewer groups of the same jobs
GATHER_WHEN = 4

#: delivery task name -> channel; delivery queue -> channel
TASK_CHANNEL = {name: channel for channel, name in DELIVER_TASK.items()}
QUEUE_CHANNEL = {QUEUE[channel]: channel for channel in DELIVER_TASK} | {
    BATCH_QUEUE[channel]: channel for channel in DELIVER_TASK
}


def consumer_windows(
    queues: list[str], prefetch: int, jobs: int, batch_size: int
) -> dict[str, int]:
    """RabbitMQ: each queue a worker process consumes, with its consumer's prefetch: ``prefetch``
    messages on a channel's queue, and on its batch queue (added) as many full batches as make
    ``jobs`` jobs (at least one), the Redis fetcher's rule for batches (config/celery.py)."""
    batches = max(1, -(-jobs // batch_size))
    windows: dict[str, int] = {}
    for q in queues:
        channel = QUEUE_CHANNEL[q]
        windows[q] = batches if q == BATCH_QUEUE[channel] else prefetch
        windows.setdefault(BATCH_QUEUE[channel], batches)
    return windows


@dataclass
class Ticket:
    """One received task message, until it is acknowledged."""

    task_id: str
    name: str
    channel: str
    jobs: list[Any]
    urgent: bool
    retries: int
    argsrepr: str
    #: called on the loop with the outcome once every job of the message is finished
    settle: Callable[[Ticket, BatchSummary | BaseException], None]
    message: Any = None
    started: float = field(default_factory=time.monotonic)


class Stream:
    """The messages this worker process holds, delivered together on its event loop."""

    def __init__(self, consumer: Any) -> None:
        from worker.runtime import runtime

        self.rt = runtime()
        self.hub = consumer.hub
        self.loop = self.rt.loop
        # task events for Flower, sent from the loop in lists (worker/consume/taskevents.py)
        self._events = TaskEvents.for_consumer(consumer)
        self._incoming: list[Ticket] = []  # loop thread only
        self._gather = self.rt.settings.worker_gather
        self._gathering: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._crashes = 0  # consecutive crashed groups (loop thread): the backoff
        self._crashed_at = 0.0
        # messages taken by the consumer (kombu), settled in its thread (main thread only)
        self._done: collections.deque[tuple[Ticket, BatchSummary | BaseException]] = (
            collections.deque()
        )
        self.held = 0
        self._idle = threading.Condition()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        if self.hub is not None:
            self.hub.add_reader(self._read_fd, self.drain)
        self.fetcher: RedisFetcher | AmqpFetcher | None = None
        self.closed = False
        if self._events is not None:
            self.loop.call_soon_threadsafe(self._flush_events_later)

    # -- the consumer's thread (kombu's consumer: RabbitMQ) ---------------------------------------
    def submit(self, ticket: Ticket) -> None:
        """Hand a message the consumer received to the event loop; returns at once."""
        self.held += 1
        self.loop.call_soon_threadsafe(self._accept, ticket)
        if self.hub is None:  # no event loop in this consumer: wait for the message here
            self.wait(lambda: self.held > 0, timeout=None)

    def _post(self, ticket: Ticket, result: BatchSummary | BaseException) -> None:
        """(loop) Hand a finished kombu message back to the consumer's thread."""
        self._done.append((ticket, result))
        with contextlib.suppress(BlockingIOError):
            os.write(self._write_fd, b".")  # wakes the consumer's event loop
        with self._idle:
            self._idle.notify_all()

    def drain(self) -> None:
        """Acknowledge (or hand back) every kombu message whose jobs are finished."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, 4096):
                pass
        finished: list[Any] = []
        while self._done:
            ticket, result = self._done.popleft()
            self.held -= 1
            if isinstance(result, BaseException):
                ticket.message.reject(requeue=True)
            else:
                finished.append(ticket.message)
        if finished:
            acknowledge(finished)

    def wait(self, busy: Callable[[], bool], timeout: float | None) -> bool:
        """Settle finished kombu messages here until ``busy()`` is false (or the timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.drain()
            if not busy():
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            with self._idle:
                self._idle.wait(min(left, 0.2) if left is not None else 0.2)

    # -- the fetcher (on the loop) -----------------------------------------------------------------
    def start_fetcher(
        self, broker_url: str, queues: list[str], prefetch: int, jobs: int, batch_size: int
    ) -> None:
        """Take these queues' messages with a fetcher of our own (worker/consume/fetch/); on Redis,
        batches only while fewer than ``jobs`` jobs are held; on RabbitMQ, the channels' batch
        queues too, a few messages (``jobs`` jobs' worth of full batches) at a time."""

        async def start() -> None:
            if is_amqp(broker_url):
                windows = consumer_windows(queues, prefetch, jobs, batch_size)
                self.fetcher = AmqpFetcher(
                    broker_url,
                    windows,
                    prefetch,
                    self._fetched,
                    self._count_poison,
                    # Celery's consumer declares the queues it was given, not their batch queues
                    declare={q: QUEUE_ARGUMENTS for q in windows if q in BATCH_QUEUE.values()},
                )
            else:
                client = aioredis.Redis.from_url(broker_url)
                self.fetcher = RedisFetcher(
                    client, queues, prefetch, self._fetched, _kombu_restore, jobs=jobs
                )
            self.fetcher.start()  # its first take runs after this returns: self.fetcher is set

        self.rt.run(start())

    def _count_poison(self) -> None:
        self.loop.create_task(self.rt.states.count("poison_messages"))

    def _fetched(self, message: Fetched) -> None:
        fetcher = self.fetcher
        assert fetcher is not None
        try:
            ticket = self._ticket(fetcher, message)
        except Exception as exc:  # a message this worker cannot read: settled, never held
            # (held, it would keep a place of the prefetch, and on RabbitMQ every later
            # acknowledgement would have to go out on its own behind it)
            log.error("message_unreadable", queue=message.key, error=type(exc).__name__)
            self._count_poison()
            fetcher.finished(message, ok=True)
            return
        if ticket is not None:
            self._accept(ticket)

    def _ticket(self, fetcher: RedisFetcher | AmqpFetcher, message: Fetched) -> Ticket | None:
        """What the stream delivers of a task message; None for one it settled as poison."""
        task = str(message.headers.get("task") or "")
        channel = TASK_CHANNEL.get(task)
        args, kwargs = arguments(message.payload)
        jobs = args[0] if isinstance(args, list | tuple) and len(args) == 1 else None
        task_id = str(message.headers.get("id") or "")
        if channel is None:  # poison: a task this worker does not deliver
            log.error("message_unknown_task", queue=message.key, task=task[:100])
            self._count_poison()
            fetcher.finished(message, ok=True)
            return None
        if kwargs or not isinstance(jobs, list):
            log.error("batch_invalid", channel=channel, reason="unexpected task arguments")
            self.loop.create_task(self.rt.states.count("poison_batches"))
            fetcher.finished(message, ok=True)
            return None
        return Ticket(
            task_id=task_id,
            name=task,
            channel=channel,
            jobs=jobs,
            urgent=message.priority == PRIORITY_URGENT,
            retries=_count(message.headers.get("retries")),
            argsrepr=str(message.headers.get("argsrepr") or "")[:500],
            settle=lambda _t, result: fetcher.finished(
                message, ok=not isinstance(result, BaseException)
            ),
            message=message,
        )

    async def stop_fetcher(self, timeout: float) -> bool:
        """Take no more messages; wait for the held ones to be finished (up to ``timeout``)."""
        fetcher = self.fetcher
        if fetcher is None:
            return True
        await fetcher.stop()
        self.rt.gate.close()  # jobs not started yet are handed back with their messages
        deadline = time.monotonic() + timeout
        while fetcher.held and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        complete = not fetcher.held
        await fetcher.close()
        return complete

    # -- the loop: groups, delivery, outcomes --------------------------------------------------------
    def _accept(self, ticket: Ticket) -> None:
        self.event(
            "task-received",
            uuid=ticket.task_id,
            name=ticket.name,
            args=ticket.argsrepr,
            kwargs="{}",
            retries=ticket.retries,
        )
        self.event("task-started", uuid=ticket.task_id)
        self._incoming.append(ticket)
        if len(self._incoming) == 1:
            gate = self.rt.gate
            if self._gather and gate.size - gate.free >= GATHER_WHEN:  # busy: gather (a window)
                self._gathering = self.loop.call_later(self._gather, self._start)
            else:  # idle: every message handed over before the next iteration joins this group
                self.loop.call_soon(self._start)
        elif self._gathering is not None and len(self._incoming) >= GATHER_MOST:
            self._gathering.cancel()  # enough gathered: start now, not when the window closes
            self._gathering = None
            self.loop.call_soon(self._start)

    def _start(self) -> None:
        self._gathering = None
        tickets, self._incoming = self._incoming, []
        by_channel: dict[str, list[Ticket]] = {}
        for ticket in tickets:
            by_channel.setdefault(ticket.channel, []).append(ticket)
        for channel, group in by_channel.items():
            task = self.loop.create_task(self._run(channel, group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, channel: str, tickets: list[Ticket]) -> None:
        reported: set[int] = set()

        def done(i: int, result: BatchSummary | BaseException) -> None:
            reported.add(i)
            self._report(tickets[i], result)

        wires = [wire for t in tickets for wire in t.jobs]
        try:
            delivery = await self.rt.adelivery(channel)
            # the suppression lookup runs while the group is registered in flight
            prepared = delivery.prepare([t.jobs for t in tickets])

            async def work() -> None:
                results = await delivery.run_prepared(prepared, [t.urgent for t in tickets], done)
                crashed = [r for r in results if isinstance(r, BaseException)]
                if crashed:  # the group's in-flight entry is marked expired: the reaper looks
                    raise crashed[0]

            await self.rt.states.inflight.run(wires, work)
        except Exception as exc:
            if not isinstance(exc, GateClosed):
                log.error(
                    "batch_crashed",
                    channel=channel,
                    count=len(wires),
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
            for i, ticket in enumerate(tickets):
                if i not in reported:
                    self._report(ticket, exc)

    def _report(self, ticket: Ticket, result: BatchSummary | BaseException) -> None:
        if isinstance(result, GateClosed):  # shutting down: handed back, not a crash
            self.event(
                "task-retried", uuid=ticket.task_id, exception="worker shutdown", traceback=""
            )
            ticket.settle(ticket, result)
            return
        if isinstance(result, BaseException):
            now = time.monotonic()
            if now - self._crashed_at > 0.5:  # one more crash episode, not one per message
                self._crashes += 1
            self._crashed_at = now
            delay = min(INFRA_RETRY_MAX_DELAY, 2.0 ** min(self._crashes, 5))
            self.event(
                "task-retried",
                uuid=ticket.task_id,
                exception=f"{type(result).__name__}: {result}"[:300],
                traceback="",
            )
            self.loop.call_later(delay, ticket.settle, ticket, result)
            return
        self._crashes = 0
        if len(ticket.jobs) > 1:  # a one-job message: its job's outcome line says it all
            log.info(
                "batch_done", channel=ticket.channel, count=len(ticket.jobs), **result.as_dict()
            )
        self.event(
            "task-succeeded",
            uuid=ticket.task_id,
            result=repr(result.as_dict()),
            runtime=time.monotonic() - ticket.started,
        )
        ticket.settle(ticket, result)

    def event(self, kind: str, **fields: Any) -> None:
        """(loop) Buffer a task event (sent with the others every taskevents.FLUSH seconds)."""
        if self._events is not None:
            self._events.send(kind, **fields)

    def _flush_events_later(self) -> None:
        self._flush_events()
        self.loop.call_later(FLUSH, self._flush_events_later)

    def _flush_events(self) -> None:
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        """Send the last events (at shutdown)."""
        self.closed = True

        async def flush() -> None:
            self._flush_events()

        with contextlib.suppress(Exception):
            self.rt.run(flush())


def acknowledge(messages: list[Any]) -> None:
    """Acknowledge messages; on Redis, with one pipeline for all of them.

    kombu's Redis transport acknowledges a message with a round trip of its own (``ZREM`` and
    ``HDEL`` of its unacked copy): here the same two commands of every message leave together,
    then each message is marked acknowledged as ``Message.ack`` would.
    """
    qos = getattr(getattr(messages[0], "channel", None), "qos", None)
    remove = getattr(qos, "_remove_from_indices", None)
    if remove is None or len(messages) == 1:
        for message in messages:
            message.ack()
        return
    with qos.pipe_or_acquire() as pipe:  # type: ignore[union-attr]
        for message in messages:
            remove(message.delivery_tag, pipe)
        pipe.execute()
    for message in messages:
        virtual_ack(qos, message.delivery_tag)
        message._state = "ACK"


def virtual_ack(qos: Any, delivery_tag: Any) -> None:
    """kombu's bookkeeping of an acknowledged message (its prefetch window), without Redis."""
    from kombu.transport.virtual.base import QoS

    QoS.ack(qos, delivery_tag)


def _kombu_restore() -> None:
    """kombu's own restore of unacknowledged messages past the visibility timeout."""
    from worker.app import app

    with app.connection_for_write() as conn:
        conn.default_channel.qos.restore_visible(num=100)  # type: ignore[attr-defined]


def _count(value: Any) -> int:
    """A count from a message header (Celery's ``retries``): 0 where it is not one, as from a
    producer that is not Celery's; only Flower shows it."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0
