"""What Redis keeps per delivered job, during the hot window and after it.

Usage: python -m bench.hotstate [--count N] [--window SECONDS] [--cluster]

The Procfile's ``msc`` line started once, with ``MAILDISPATCH_JOB_HOT_TTL`` and
``MAILDISPATCH_EVENTS_RETENTION`` set to ``window`` seconds (the clock moved through
configuration, as one would check a one-day window without waiting a day). ``count`` jobs with
realistic subjects and metadata (an order id, a customer id, a campaign, ~150 bytes of JSON)
are sent with ``send_many`` and delivered; then, after the last one is final:

- Redis bytes per delivered job **during the window** (``used_memory`` growth over the jobs,
  and ``MEMORY USAGE`` of a sample of job hashes);
- the same **after the window**, once one more job has been delivered (traffic goes on; the
  schedulers also trim every shard's event stream each second).

With ``--cluster``, job state is on a 3-master Redis Cluster with a replica each
(tests/support/redis_cluster.py) and RabbitMQ is the broker; memory is the masters'
``used_memory_dataset`` (their ``used_memory`` also holds the replication backlog, a fixed ring
of ``repl-backlog-size``).

Issue 18's target is below 100 bytes per delivered job after the window: nothing left for final
jobs. Their status, bounce attribution and history are in the SQL store by then.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import msc
from bench import scenarios as sc
from bench.common import BODY, RedisServer, Relay
from config import keys


def realistic(i: int, run: str) -> dict[str, Any]:
    """A transactional job as a shop would send it."""
    return {
        "owner": f"shop-{i % 50}",
        "channel": "msc",
        "identity": "Acme Store <orders@acme.example>",
        "to": [f"customer{i}-{run}@example.org"],
        "subject": f"Your order #{100000 + i} has shipped: arriving Thursday, track it here",
        "text": BODY,
        "metadata": {
            "order_id": f"ord_{uuid.uuid4().hex[:20]}",
            "customer_id": f"cus_{uuid.uuid4().hex[:16]}",
            "campaign": "shipping-confirmation",
            "locale": "en-GB",
        },
    }


class _Single:
    """The bench's own redis-server: its ``used_memory``."""

    def __init__(self, tmp: Path) -> None:
        self.server = RedisServer(tmp)
        self.url = self.server.url

    def memory(self) -> int:
        return self.server.used_memory()

    def memory_usage(self, key: str) -> int:
        return int(self.server.client.memory_usage(key) or 0)

    def exists(self, key: str) -> bool:
        return bool(self.server.client.exists(key))

    def stop(self) -> None:
        self.server.stop()


class _Cluster:
    """A 3-master Redis Cluster with a replica each (tests/support/redis_cluster.py): the
    masters' ``used_memory_dataset`` summed. Their ``used_memory`` also holds each master's
    replication backlog, a fixed ring (``repl-backlog-size``) that has nothing to do with jobs."""

    def __init__(self) -> None:
        from config.redisconn import connect
        from tests.support.redis_cluster import RedisCluster

        self.cluster = RedisCluster(
            masters=3, replicas=1, extra={"hash-max-listpack-value": "256"}
        ).start()
        self.url = self.cluster.url
        self.client = connect(self.url)

    def memory(self) -> int:
        masters = [n for n in self.cluster.nodes if n.role == "master"]
        return sum(int(n.call("INFO", "memory")["used_memory_dataset"]) for n in masters)

    def memory_usage(self, key: str) -> int:
        return int(self.client.memory_usage(key) or 0)

    def exists(self, key: str) -> bool:
        return bool(self.client.exists(key))

    def stop(self) -> None:
        self.client.close()
        self.cluster.stop()


def _settle(store: _Single | _Cluster) -> int:
    """Memory once the active expiry cycle has had a moment."""
    time.sleep(1.0)
    return store.memory()


def run(tmp: Path, count: int, window: float, cluster: bool = False) -> dict[str, Any]:
    """One measurement: the figures (``cluster``: job state on a Redis Cluster, RabbitMQ the
    broker)."""
    from producers.client import Dispatcher

    tmp.mkdir(parents=True, exist_ok=True)
    store: _Single | _Cluster = _Cluster() if cluster else _Single(tmp)
    relay = Relay(tmp)
    fleet: msc.Fleet | None = None
    vhost = sc.rabbit_vhost("hotstate") if cluster else contextlib.nullcontext(None)
    try:
        with vhost as broker:
            env = msc.worker_env(store.url, relay.url, tmp, None, broker) | {
                "MAILDISPATCH_JOB_HOT_TTL": f"{window}s",
                "MAILDISPATCH_EVENTS_RETENTION": f"{window}s",
            }
            fleet = msc.Fleet(env, tmp, "hotstate")
            fleet.wait_ready()
            dispatcher = Dispatcher(msc.settings_from(env))
            msc.deliver(dispatcher, relay, [realistic(i, "warm") for i in range(200)], 60)
            time.sleep(window + 1)
            msc.deliver(dispatcher, relay, [realistic(0, "trim")], 30)
            before = _settle(store)
            done = msc.deliver(dispatcher, relay, [realistic(i, "m") for i in range(count)], 300)
            states = msc.wait_final(dispatcher, done["ids"])
            during = _settle(store)
            sample = [keys.job(str(i)) for i in done["ids"][:: max(1, count // 200)]]
            usage = [store.memory_usage(k) for k in sample]
            time.sleep(window + 1.0)  # every job of the run final for longer than the window
            msc.deliver(dispatcher, relay, [realistic(1, "trim2")], 30)  # traffic goes on
            after = _settle(store)
            left = sum(1 for k in sample if store.exists(k))
            dispatcher.close()
            fleet.stop()
            fleet = None
        return {
            "count": count,
            "window_s": window,
            "store": "cluster" if cluster else "redis",
            "delivered": done["delivered"],
            "states": states,
            "bytes_per_job_during": (during - before) / count,
            "job_hash_memory_usage": statistics.median(usage) if usage else 0,
            "bytes_per_job_after": (after - before) / count,
            "sampled_jobs_left_after": left,
        }
    finally:
        if fleet is not None:
            fleet.stop()
        relay.stop()
        store.stop()


def line(f: dict[str, Any]) -> str:
    """One report line."""
    return (
        f"hot state ({f['count']:,} delivered jobs"
        + (" on a 3-master Redis Cluster" if f.get("store") == "cluster" else "")
        + f", realistic subject and metadata; hot window "
        f"{f['window_s']:g} s by configuration): Redis {f['bytes_per_job_during']:,.0f} bytes per "
        f"job during the window (a job hash: {f['job_hash_memory_usage']:,.0f} bytes by MEMORY "
        f"USAGE), {f['bytes_per_job_after']:,.0f} after it (target < 100); sampled job hashes "
        f"left after: {f['sampled_jobs_left_after']}"
        + ("" if f["delivered"] >= f["count"] else f"; !! {f['count'] - f['delivered']} missing")
    )


def main() -> int:
    """Run it alone."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument(
        "--cluster", action="store_true", help="job state on a Redis Cluster, RabbitMQ the broker"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="maildispatch-hotstate-") as tmp:
        print(line(run(Path(tmp), args.count, args.window, args.cluster)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
