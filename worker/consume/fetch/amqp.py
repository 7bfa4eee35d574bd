"""Delivery task messages taken from RabbitMQ by a consumer of the worker's own, on its loop.

kombu's consumer (py-amqp) reads every frame in Celery's thread and acknowledges each message
with a frame of its own; with one-job messages that thread, not delivery, was where a worker
process spent a third of its time, and the GIL it shares with the delivery loop made the rest
slower (docs/performance.md). Here the worker's event loop consumes its delivery queues itself
with aiormq (an asyncio AMQP 0.9.1 client), so taking a message costs the loop a frame parse and
no thread switch:

- one consumer per queue on a channel of its own, with ``basic.qos`` of
  ``MAILDISPATCH_WORKER_PREFETCH`` unacknowledged messages (per consumer: quorum queues have no
  global QoS); RabbitMQ pushes messages as room frees;
- finished messages are acknowledged together: the run of finished messages at the front of the
  channel's unacknowledged ones with one ``basic.ack(multiple)``, any finished later one on its
  own; a message whose group crashed goes back with ``basic.reject(requeue)``;
- acknowledgements wait until a quarter of the prefetch is finished, every held message is, or
  ``ACK_DELAY`` has passed: RabbitMQ sends as many messages as were acknowledged, so a busy
  worker receives them in runs that become one group each (one in-flight registration, one
  suppression lookup, one Redis round trip for their claims: worker/consume/stream.py), as the Redis
  fetcher takes them. A message acknowledged late is only a held slot for those milliseconds;
  delivery does not wait for it. The messages RabbitMQ sends for acknowledged ones arrive over
  several loop iterations (frames parsed one by one): they are handed to the stream together
  once as many have arrived as were acknowledged, or ``BURST_WAIT`` after the first. A message
  that arrives while none is expected (the worker had room) is handed over at once;
- a dead worker's messages come back at once (RabbitMQ requeues a closed channel's unacked
  messages), its started jobs through the claim lease (worker/jobs/inflight.py): claims make the
  second copy harmless. A lost connection is opened again with a backoff; messages held from
  the old one are finished but not acknowledged (RabbitMQ already gave them back).

Queues are declared by Celery's consumer (quorum, config/celery.py) before this one starts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from typing import Any

import aiormq
import structlog
from aiormq.abc import DeliveredMessage

from config.celery import lane_of_amqp
from worker.consume.fetch.message import Fetched, decode_body

log = structlog.get_logger("maildispatch.fetch")

#: the longest a finished message waits for others to be acknowledged with it (seconds)
ACK_DELAY = 0.01
#: the longest a message sent for an acknowledged one waits for the rest of its run (seconds)
BURST_WAIT = 0.002


def amqp_url(broker_url: str) -> str:
    """The first broker of a kombu URL, as aiormq reads it (``pyamqp://`` is ``amqp://``)."""
    first = broker_url.split(";")[0].strip()
    scheme, sep, rest = first.partition("://")
    return ("amqps" if scheme == "amqps" else "amqp") + sep + rest


class AmqpFetcher:
    """Consumes some delivery queues of RabbitMQ for this process's stream."""

    def __init__(
        self,
        url: str,
        queues: list[str] | dict[str, int],
        prefetch: int,
        accept: Callable[[Fetched], None],
        poison: Callable[[], None],
        declare: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.url = amqp_url(url)
        #: queue -> its consumer's prefetch (a list: ``prefetch`` each)
        self.queues = dict(queues) if isinstance(queues, dict) else dict.fromkeys(queues, prefetch)
        self.prefetch = prefetch
        #: queues this consumer declares (durable, with these arguments) before consuming them
        self.declare = declare or {}
        #: finished messages acknowledged at once (and so received again together)
        self.refill = max(1, prefetch // 4)
        self.accept = accept
        self.poison = poison
        self.held: dict[Any, Fetched] = {}
        self.held_jobs = 0
        self.taken = 0
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._consumers: list[str] = []
        #: bumped at each new channel: a held message of an older one cannot be acknowledged
        self._generation = 0
        #: the current channel's held delivery tags, in delivery order (tags only grow)
        self._pending: collections.deque[int] = collections.deque()
        self._done: set[int] = set()  # finished, not acknowledged yet
        self._settled: set[int] = set()  # acknowledged or rejected on their own, still pending
        self._rejects: list[int] = []
        self._flush_soon = False
        self._timer: asyncio.TimerHandle | None = None
        #: messages RabbitMQ owes for acknowledged ones, and those of them arrived so far
        self._expected = 0
        self._burst: list[Fetched] = []
        self._burst_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        #: acknowledgements under way: a lost connection ends them (below)
        self._flushes: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()

    def start(self) -> None:
        """Start consuming (on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._consume_forever())

    async def _consume_forever(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                connection = await aiormq.connect(self.url)
                self._connection = connection
                # aiormq's default buffer of 10 frames (3 messages) per channel would hand a run
                # of messages over a loop iteration or more each; RabbitMQ sends no more than the
                # prefetch anyway, so the buffer is left unbounded (0)
                channel = await connection.channel(publisher_confirms=False, frame_buffer_size=0)
                self._generation += 1
                self._channel = channel
                self._pending.clear()
                self._done.clear()
                self._settled.clear()
                self._rejects.clear()
                self._expected = 0
                self._consumers = []
                for queue, arguments in self.declare.items():
                    await channel.queue_declare(queue, durable=True, arguments=arguments)
                for queue, window in self.queues.items():
                    # per consumer (quorum queues have no global QoS): set before each consume
                    await channel.basic_qos(prefetch_count=window)
                    ok = await channel.basic_consume(queue, self._received, no_ack=False)
                    self._consumers.append(str(ok.consumer_tag))
                failures = 0
                self.connected.set()
                await channel.closing
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # RabbitMQ away or restarting: never stop for good
                failures += 1
                delay = min(10.0, 0.1 * 2**failures)
                log.warning("fetch_failed", error=type(exc).__name__, retry_in_s=delay)
                self._lost()
                with contextlib.suppress(Exception):
                    if self._connection is not None:
                        await self._connection.close()
                await asyncio.sleep(delay)
            else:
                self._lost()

    def _lost(self) -> None:
        """The channel is gone: RabbitMQ gives its unacknowledged messages back. A flush still
        writing to it would wait for ever (aiormq's writer stops with a full write queue):
        cancelled, it lets the messages it carried go."""
        self._channel = None
        self.connected.clear()
        for flush in list(self._flushes):
            flush.cancel()

    async def _received(self, message: DeliveredMessage) -> None:
        tag = message.delivery_tag
        if tag is None:
            return
        self._pending.append(tag)
        properties = message.header.properties
        try:
            payload = decode_body(message.body, properties.content_type, None)
        except Exception as exc:  # poison: not a task message we can read
            log.error("message_undecodable", error=type(exc).__name__, size=len(message.body))
            self.poison()
            self._done.add(tag)
            self._schedule_flush()
            return
        fetched = Fetched(
            (self._generation, tag),
            dict(properties.headers or {}),
            lane_of_amqp(properties.priority),
            message.routing_key or "",
            payload,
            message.body,
        )
        self.held[fetched.tag] = fetched
        self.held_jobs += fetched.jobs
        self.taken += 1
        if self._expected <= 0 and not self._burst:
            self.accept(fetched)  # room was free: nothing to wait for
            return
        self._burst.append(fetched)
        self._expected -= 1
        if self._expected <= 0:
            self._hand_over()
        elif self._burst_timer is None:
            self._burst_timer = asyncio.get_running_loop().call_later(BURST_WAIT, self._hand_over)

    def _hand_over(self) -> None:
        """The messages of a run, to the stream together (one group)."""
        if self._burst_timer is not None:
            self._burst_timer.cancel()
            self._burst_timer = None
        burst, self._burst = self._burst, []
        self._expected = 0
        for fetched in burst:
            self.accept(fetched)

    def finished(self, message: Fetched, ok: bool) -> None:
        """A held message's jobs are finished: acknowledge it, or give it back (``ok=False``)."""
        generation, tag = message.tag
        if generation != self._generation or self._channel is None:
            self._release(message.tag)  # its channel is gone: RabbitMQ has it back already
            return
        if ok:
            self._done.add(tag)
        else:
            self._rejects.append(tag)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_soon:
            return
        finished = len(self._done) + len(self._rejects)
        if finished >= self.refill or finished >= len(self.held) or self._stopping:
            self._flush_now()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._flush_now)

    def _flush_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    def _start_flush(self) -> None:
        flush = asyncio.ensure_future(self._flush())
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)

    async def _flush(self) -> None:
        self._flush_soon = False
        channel, generation = self._channel, self._generation
        done, rejects = self._done, self._rejects
        self._done, self._rejects = set(), []
        pending, settled = self._pending, self._settled
        finished = [*done, *rejects]
        try:
            if channel is None:
                return
            for tag in rejects:
                await channel.basic_reject(tag, requeue=True, wait=False)
                settled.add(tag)
            # the run of settled messages at the front: one acknowledgement for all of it
            highest = None
            while pending and (pending[0] in done or pending[0] in settled):
                tag = pending.popleft()
                if tag in done:
                    done.discard(tag)
                    highest = tag
                else:
                    settled.discard(tag)
            if highest is not None:
                await channel.basic_ack(highest, multiple=True, wait=False)
            for tag in done:  # finished behind one still running: on its own
                await channel.basic_ack(tag, wait=False)
                settled.add(tag)
            if not self._stopping:
                self._expected += len(finished)
        except Exception as exc:
            # not acknowledged: the channel is closing and RabbitMQ hands the messages out again;
            # their jobs are final, so the claims skip them
            log.warning("ack_failed", messages=len(finished), error=type(exc).__name__)
        finally:
            for tag in finished:
                self._release((generation, tag))

    def _release(self, key: Any) -> None:
        message = self.held.pop(key, None)
        if message is not None:
            self.held_jobs -= message.jobs

    async def stop(self) -> None:
        """Take no more messages (held ones are still finished and acknowledged)."""
        self._stopping = True
        channel = self._channel
        if channel is not None:
            for consumer in self._consumers:
                with contextlib.suppress(Exception):
                    await channel.basic_cancel(consumer)

    async def close(self) -> None:
        """Send the last acknowledgements and close the connection."""
        self._stopping = True
        await self._flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
