"""The Prometheus collector behind ``/metrics``: what Flower does not show.

Read at each scrape, from where the fleet keeps it: queue depth from the broker (Redis ``LLEN``,
RabbitMQ a passive ``queue.declare``), the retry backlog and the workers' shared counters from
Redis (``worker/observe/metrics.py``), Failed Sends by kind and bounces by reason from the store (cached
briefly: a ``GROUP BY`` over the table). A source that does not answer reports
``maildispatch_metrics_source_up{source} 0`` instead of failing the whole scrape.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
import structlog
from kombu import Connection
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from config import keys
from config.celery import BATCH_QUEUE, CHANNELS, QUEUE
from config.redisconn import connect
from config.settings import Settings
from worker.failures.kinds import FailedKind
from worker.observe.metrics import INF, LATENCY_BUCKETS
from worker.store import Store
from worker.store.models import FAILED_KINDS, FailedSend

log = structlog.get_logger("maildispatch.metrics")

#: kombu's Redis transport keeps a queue's priority levels in separate lists: name, name␆␖3, ...
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)
STORE_CACHE_SECONDS = 10.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class DeliveryCollector(Collector):
    """Queue depth, retry backlog, deliveries, latency, Failed Sends and bounces."""

    def __init__(self, settings: Settings, store: Callable[[], Store]) -> None:
        self.settings = settings
        self._store = store
        self.state = connect(settings.state_redis_url, socket_timeout=3)
        self.redis_broker = settings.broker_url.startswith(("redis://", "rediss://", "unix://"))
        self.broker = (
            redis.Redis.from_url(settings.broker_url, socket_timeout=3)
            if self.redis_broker
            else None
        )
        self._store_cache: tuple[float, list[tuple[str, str, int]]] | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        """Every metric family, each source on its own."""
        up = GaugeMetricFamily(
            "maildispatch_metrics_source_up", "Did the source answer this scrape", labels=["source"]
        )
        for source, read in (
            ("broker", self._queues),
            ("redis", self._shared),
            ("database", self._failed_sends),
        ):
            try:
                families = list(read())
            except Exception as exc:
                log.warning("metrics_source_failed", source=source, error=type(exc).__name__)
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from families
        yield up

    # -- the broker ---------------------------------------------------------------------------
    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "maildispatch_queue_messages",
            "Messages waiting in each queue (a delivery message carries a batch of 1..N jobs)",
            labels=["queue"],
        )
        for name, count in self.queue_depths().items():
            depth.add_metric([name], count)
        yield depth
        if self.broker is not None:
            unacked = GaugeMetricFamily(
                "maildispatch_unacked_messages",
                "Messages delivered to workers and not yet acknowledged (Redis broker)",
            )
            unacked.add_metric([], int(self.broker.hlen("unacked")))
            yield unacked

    def queue_depths(self) -> dict[str, int]:
        """Queue name -> messages waiting."""
        names = list(QUEUE.values())
        if self.broker is not None:
            pipe = self.broker.pipeline(transaction=False)
            for name in names:
                for step in _PRIORITY_STEPS:
                    pipe.llen(f"{name}{_PRIORITY_SEP}{step}" if step else name)
            lengths = pipe.execute()
            per = len(_PRIORITY_STEPS)
            return {n: int(sum(lengths[i * per : (i + 1) * per])) for i, n in enumerate(names)}
        # RabbitMQ: a channel's large batches wait in its batch queue, counted with the channel's
        # queue as Redis' lanes are (config/celery.py)
        parts = {name: [name] for name in names} | {
            QUEUE[channel]: [QUEUE[channel], batches] for channel, batches in BATCH_QUEUE.items()
        }
        depths = dict.fromkeys(names, 0)
        with Connection(self.settings.broker_url, connect_timeout=3) as conn:
            channel: Any = conn.channel()
            for name, queues in parts.items():
                for queue in queues:
                    try:
                        depths[name] += int(
                            channel.queue_declare(queue=queue, passive=True).message_count
                        )
                    except Exception:  # not declared yet: no worker or producer has used it
                        channel = conn.channel()
        return depths

    # -- the fleet's shared counters in Redis ---------------------------------------------------
    def _shared(self) -> Iterator[Metric]:
        pipe = self.state.pipeline(transaction=False)
        now = time.time()
        for name in keys.SCHEDULES:
            pipe.zcard(name)
            pipe.zcount(name, "-inf", now)
        pipe.hgetall(keys.DELIVERIES)
        pipe.hgetall(keys.LATENCY)
        pipe.hgetall(keys.COUNTERS)
        *sizes, deliveries, latency, counters = pipe.execute()
        scheduled, overdue = sum(sizes[::2]), sum(sizes[1::2])

        backlog = GaugeMetricFamily(
            "maildispatch_scheduled_jobs", "Jobs waiting in the schedule (retries and send_at)"
        )
        backlog.add_metric([], int(scheduled))
        yield backlog
        due = GaugeMetricFamily(
            "maildispatch_scheduled_overdue_jobs",
            "Scheduled jobs already due (the scheduler is behind, or stopped)",
        )
        due.add_metric([], int(overdue))
        yield due

        sent = CounterMetricFamily(
            "maildispatch_deliveries",
            "Delivery attempts by channel and outcome (sent, failed, retrying, deferred, skipped, invalid)",
            labels=["channel", "outcome"],
        )
        for field, value in sorted(_decode(deliveries).items()):
            channel, _, outcome = field.partition(":")
            sent.add_metric([channel, outcome], float(value))
        yield sent
        yield self._latency(_decode(latency))

        events = CounterMetricFamily(
            "maildispatch_events",
            "Operational events (poison jobs and batches, deferrals, cancelled jobs, bounces)",
            labels=["event"],
        )
        for name, value in sorted(_decode(counters).items()):
            events.add_metric([name], float(value))
        yield events

    def _latency(self, raw: dict[str, str]) -> Metric:
        histogram = HistogramMetricFamily(
            "maildispatch_delivery_latency_seconds",
            "Time from enqueue (or send_at) to the server accepting the job, retries included",
            labels=["channel"],
        )
        channels = sorted({f.partition(":")[0] for f in raw} | set(CHANNELS))
        for channel in channels:
            running = 0.0
            buckets: list[tuple[str, float]] = []
            for le in (*(repr(b) for b in LATENCY_BUCKETS), INF):
                running += float(raw.get(f"{channel}:{le}", 0))
                buckets.append((le, running))
            histogram.add_metric([channel], buckets, float(raw.get(f"{channel}:sum", 0)))
        return histogram

    # -- the store -----------------------------------------------------------------------------
    def _failed_sends(self) -> Iterator[Metric]:
        rows = self._store_counts()
        by_kind = GaugeMetricFamily(
            "maildispatch_failed_sends", "Failed Sends in the store by kind", labels=["kind"]
        )
        kinds = dict.fromkeys(FAILED_KINDS, 0)
        for kind, _, count in rows:
            kinds[kind] = kinds.get(kind, 0) + count
        for kind, count in kinds.items():
            by_kind.add_metric([kind], count)
        yield by_kind
        bounces = GaugeMetricFamily(
            "maildispatch_bounces", "Bounced recipients in the store by reason", labels=["reason"]
        )
        for kind, reason, count in rows:
            if kind == FailedKind.BOUNCED:
                bounces.add_metric([reason or "undefined"], count)
        yield bounces

    def _store_counts(self) -> list[tuple[str, str, int]]:
        with self._lock:
            cached = self._store_cache
            if cached and cached[0] > time.monotonic():
                return cached[1]
            query = select(FailedSend.kind, FailedSend.reason, func.count()).group_by(
                FailedSend.kind, FailedSend.reason
            )
            with self._store().session() as session:
                rows = [(k, r, int(n)) for k, r, n in session.execute(query)]
            self._store_cache = (time.monotonic() + STORE_CACHE_SECONDS, rows)
            return rows

    def forget_cache(self) -> None:
        """Read the store afresh at the next scrape."""
        with self._lock:
            self._store_cache = None


def _decode(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}
