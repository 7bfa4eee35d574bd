"""HTTP intake throughput: ``POST /v1/messages:batch`` of 1,000 jobs against ``maildispatch api``.

    .venv/bin/python -m bench.http_intake [--batches 20] [--clients 1] [--json]

Starts a private redis-server and the API process (no worker: this measures the front door —
HTTP, one validation per job, the Redis bookkeeping and the broker publish), creates an API key,
posts batches of distinct ~2 KB jobs and prints jobs/s. The figure to hold is >= 5,000 jobs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.common import BODY, REPO, SECRET, Proc, RedisServer, free_port

BATCH = 1000


def batch_body(n: int) -> bytes:
    """One batch request of distinct jobs (distinct recipients: no cache makes it cheaper)."""
    jobs = [
        {
            "owner": f"tenant-{(n * BATCH + i) % 50}",
            "identity": "Bench Sender <sender@acme.example>",
            "to": [f"user{n}-{i}@example.org"],
            "subject": f"Bench message {n}-{i}",
            "text": BODY,
            "metadata": {"conversation": f"c-{i}"},
        }
        for i in range(BATCH)
    ]
    return json.dumps({"jobs": jobs}).encode()


def run(batches: int, clients: int) -> dict[str, Any]:
    """Post ``batches`` batches from ``clients`` concurrent clients; return the figures."""
    with tempfile.TemporaryDirectory(prefix="md-bench-http-") as tmp_name:
        tmp = Path(tmp_name)
        redis = RedisServer(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
        env |= {
            "MAILDISPATCH_BROKER_URL": redis.url,
            "MAILDISPATCH_DATABASE_URL": f"sqlite:///{tmp / 'store.db'}",
            "MAILDISPATCH_SECRET_KEY": SECRET,
            "MAILDISPATCH_LOG_LEVEL": "WARNING",
            "MAILDISPATCH_LOG_FORMAT": "json",
        }
        cli = [sys.executable, "-m", "producers.cli"]
        created = subprocess.run(
            [*cli, "api-keys", "create", "--name", "bench"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        key = created.stdout.strip()
        port = free_port()
        api = Proc([*cli, "api", "--port", str(port)], tmp / "api.log", env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the API did not start:\n" + api.tail())
                time.sleep(0.1)
            bodies = [batch_body(n) for n in range(batches + clients)]
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

            def post(client: httpx.Client, body: bytes) -> float:
                started = time.perf_counter()
                res = client.post("/v1/messages:batch", content=body, headers=headers)
                if res.status_code != 202:
                    raise RuntimeError(f"{res.status_code}: {res.text[:500]}")
                return time.perf_counter() - started

            pool = [httpx.Client(base_url=url, timeout=60) for _ in range(clients)]
            for c, body in zip(pool, bodies[batches:], strict=True):
                post(c, body)  # warm-up: connections, caches, the first publish
            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as executor:
                latencies = list(
                    executor.map(lambda i: post(pool[i % clients], bodies[i]), range(batches))
                )
            elapsed = time.perf_counter() - started
            for c in pool:
                c.close()
            queued = int(redis.client.llen("mail.msc"))
        finally:
            api.stop()
            redis.stop()
    latencies.sort()
    return {
        "jobs": batches * BATCH,
        "clients": clients,
        "seconds": round(elapsed, 3),
        "jobs_per_s": round(batches * BATCH / elapsed),
        "batch_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "batch_max_ms": round(latencies[-1] * 1000, 1),
        "messages_on_queue": queued,
    }


def main() -> int:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.batches, args.clients)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['jobs']} jobs in {result['seconds']} s from {result['clients']} client(s): "
            f"{result['jobs_per_s']} jobs/s (batch p50 {result['batch_p50_ms']} ms, "
            f"max {result['batch_max_ms']} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
