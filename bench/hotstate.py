"""What Redis keeps per delivered job, during the hot window and after it.

Usage: python -m bench.hotstate [--count N] [--window SECONDS]

The Procfile's ``msc`` line started once, with ``MAILDISPATCH_JOB_HOT_TTL`` and
``MAILDISPATCH_EVENTS_RETENTION`` set to ``window`` seconds (the clock moved through
configuration, as one would check a one-day window without waiting a day). ``count`` jobs with
realistic subjects and metadata (an order id, a customer id, a campaign, ~150 bytes of JSON)
are sent with ``send_many`` and delivered; then, after the last one is final:

- Redis bytes per delivered job **during the window** (``used_memory`` growth over the jobs,
  and ``MEMORY USAGE`` of a sample of job hashes);
- the same **after the window**, once one more job has been delivered (live traffic trims the
  event stream: a stream entry older than the retention goes at the next event written).

Issue 18's target is below 100 bytes per delivered job after the window: nothing left for final
jobs. Their status, bounce attribution and history are in the SQL store by then.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import msc
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


def _settle(redis: RedisServer) -> int:
    """``used_memory`` once the active expiry cycle has had a moment."""
    time.sleep(1.0)
    return redis.used_memory()


def run(tmp: Path, count: int, window: float) -> dict[str, Any]:
    """One measurement: the figures."""
    from producers.client import Dispatcher

    tmp.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(tmp)
    relay = Relay(tmp)
    fleet: msc.Fleet | None = None
    try:
        env = msc.worker_env(redis.url, relay.url, tmp) | {
            "MAILDISPATCH_JOB_HOT_TTL": f"{window}s",
            "MAILDISPATCH_EVENTS_RETENTION": f"{window}s",
        }
        fleet = msc.Fleet(env, tmp, "hotstate")
        fleet.wait_ready()
        dispatcher = Dispatcher(msc.settings_from(env))
        msc.deliver(dispatcher, relay, [realistic(i, "warm") for i in range(200)], 60)
        time.sleep(window + 1)
        msc.deliver(dispatcher, relay, [realistic(0, "trim")], 30)
        before = _settle(redis)
        done = msc.deliver(dispatcher, relay, [realistic(i, "m") for i in range(count)], 300)
        states = msc.wait_final(dispatcher, done["ids"])
        during = _settle(redis)
        sample = [keys.job(str(i)) for i in done["ids"][:: max(1, count // 200)]]
        usage = [int(redis.client.memory_usage(k) or 0) for k in sample]
        time.sleep(window + 1.0)  # every job of the run final for longer than the window
        msc.deliver(dispatcher, relay, [realistic(1, "trim2")], 30)  # traffic goes on
        after = _settle(redis)
        left = sum(1 for k in sample if redis.client.exists(k))
        dispatcher.close()
        return {
            "count": count,
            "window_s": window,
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
        redis.stop()


def line(f: dict[str, Any]) -> str:
    """One report line."""
    return (
        f"hot state ({f['count']:,} delivered jobs, realistic subject and metadata; hot window "
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="maildispatch-hotstate-") as tmp:
        print(line(run(Path(tmp), args.count, args.window)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
