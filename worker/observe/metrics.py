"""Delivery metrics shared by every worker process through Redis, read by the API's ``/metrics``.

Workers are separate processes (and hosts), so in-process Prometheus counters would each see a
part. A worker process notes outcomes and latencies in memory while it delivers a batch and adds
them to two Redis hashes (``config/keys.py``) once per group of messages, through the process's
AutoPipeline: with the next iteration's other Redis calls, not one round trip per job. ``worker/api/collector.py`` turns the hashes into Prometheus counters and a histogram.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime

from config import keys
from worker.jobs.autopipe import AutoPipeline

#: enqueue -> accepted, in seconds: from an immediate send to retries spread over a day
LATENCY_BUCKETS = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
    3600.0,
    4 * 3600.0,
    86400.0,
)
INF = "+Inf"

_latencies: list[tuple[str, float]] = []  # (channel, seconds), drained by flush()


def bucket_label(seconds: float) -> str:
    """The label of the smallest bucket holding ``seconds`` (``+Inf`` beyond the last)."""
    index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
    return repr(LATENCY_BUCKETS[index]) if index < len(LATENCY_BUCKETS) else INF


def accepted(channel: str, enqueued_at: float, send_at: datetime | None = None) -> None:
    """Note a job the server accepted: its latency since it was enqueued (or due, if scheduled)."""
    start = max(enqueued_at, send_at.timestamp() if send_at else 0.0)
    if start > 0:
        _latencies.append((channel, max(0.0, time.time() - start)))


def flush(auto: AutoPipeline, channel: str, outcomes: Mapping[str, int]) -> None:
    """Add a batch's outcome counts and the latencies noted so far to the shared hashes.

    Queued on the process's AutoPipeline, not waited for: they leave with the next iteration's
    other Redis calls. Best effort: a count lost to a Redis error never fails a delivery.
    """
    pending = _latencies[:]
    del _latencies[: len(pending)]
    buckets: Counter[tuple[str, str]] = Counter()
    sums: dict[str, float] = {}
    for ch, seconds in pending:
        buckets[ch, bucket_label(seconds)] += 1
        sums[ch] = sums.get(ch, 0.0) + seconds
    for outcome, count in outcomes.items():
        if count:
            auto.send("HINCRBY", keys.DELIVERIES, f"{channel}:{outcome}", count)
    for (ch, label), count in buckets.items():
        auto.send("HINCRBY", keys.LATENCY, f"{ch}:{label}", count)
    for ch, total in sums.items():
        auto.send("HINCRBYFLOAT", keys.LATENCY, f"{ch}:sum", total)
        auto.send(
            "HINCRBY",
            keys.LATENCY,
            f"{ch}:count",
            sum(n for (c, _), n in buckets.items() if c == ch),
        )
