"""The bench's measurements of the way in: ``send_many`` with no worker consuming, and the HTTP
intake (``maildispatch api``) alone and end to end. See bench/scenarios.py for the rest."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import msc
from bench.common import (
    REPO,
    Proc,
    RedisServer,
    free_port,
    wait_port,
)
from bench.scenarios import MscRun, Result, cpu_per


# -- producers -----------------------------------------------------------------------------------------
def producer(redis: RedisServer, tmp: Path, count: int) -> dict[str, float]:
    """send_many of ``count`` validated jobs with no worker consuming; Redis bytes per queued job."""
    from producers.client import Dispatcher

    env = msc.worker_env(redis.url, "smtp://127.0.0.1:9", tmp)
    d = Dispatcher(msc.settings_from(env))
    try:
        d.send_many(msc.jobs(200, "warm-producer"))
        redis.client.flushall()
        items = msc.jobs(count, "producer")
        before = redis.used_memory()
        start = time.perf_counter()
        d.send_many(items)
        seconds = time.perf_counter() - start
        after = redis.used_memory()
        queued = queued_messages(redis)
    finally:
        d.close()
        redis.client.flushall()
    return {
        "count": count,
        "jobs_per_s": count / seconds,
        "redis_bytes_per_job": (after - before) / count,
        "messages_queued": queued,
    }


def queued_messages(redis: RedisServer, queue: str = "mail.msc") -> int:
    """Task messages waiting on ``queue``, every priority lane of it (kombu keeps one Redis list
    per priority: the queue's name, then the name followed by a separator and the priority)."""
    lanes = [
        k for k in redis.client.scan_iter(match=f"{queue}*") if redis.client.type(k) == b"list"
    ]
    return sum(int(redis.client.llen(k)) for k in lanes)


class Api:
    """``maildispatch api`` as the Procfile starts it, and an API key with the send scope."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        create = ["api-keys", "create", "--name", "bench", "--scope", "send,read", "--json"]
        key = subprocess.run(
            [sys.executable, "-m", "producers.cli", *create],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        self.key = json.loads(key.stdout.strip().splitlines()[-1])["key"]
        self.port = free_port()
        self.proc = Proc(
            [sys.executable, "-m", "producers.cli", "api", "--port", str(self.port)],
            tmp / "api.log",
            env,
        )
        wait_port(self.port, 60)

    def post_batches(self, bodies: list[bytes], clients: int = 2) -> float:
        """POST every body to /v1/messages:batch over ``clients`` keep-alive connections."""
        import httpx

        errors: list[str] = []
        queue = iter(bodies)
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{self.port}",
                headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
                timeout=120,
            ) as http:
                while True:
                    with lock:
                        body = next(queue, None)
                    if body is None:
                        return
                    response = http.post("/v1/messages:batch", content=body)
                    if response.status_code != 202 and response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text[:300]}")
                        return

        threads = [threading.Thread(target=client) for _ in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"HTTP batch intake failed: {errors[0]}")
        return time.perf_counter() - start

    def stop(self) -> None:
        """Stop the server."""
        self.proc.stop()


def http_bodies(count: int, per_request: int, label: str) -> list[bytes]:
    """Request bodies of ``per_request`` jobs each (JSON encoded before the clock starts)."""
    jobs = msc.jobs(count, label)
    return [
        json.dumps({"jobs": jobs[i : i + per_request]}).encode()
        for i in range(0, count, per_request)
    ]


def http_intake(api: Api, redis: RedisServer, count: int, per_request: int) -> dict[str, float]:
    """Jobs per second through POST /v1/messages:batch with no worker consuming."""
    api.post_batches(http_bodies(min(count, per_request * 2), per_request, "warm-http"))
    redis.client.flushall()
    bodies = http_bodies(count, per_request, "http")
    seconds = api.post_batches(bodies)
    queued = queued_messages(redis)
    redis.client.flushall()
    return {"count": count, "jobs_per_s": count / seconds, "messages_queued": queued}


def http_delivery(api: Api, run: MscRun, count: int, per_request: int, timeout: float) -> Result:
    """End to end through the HTTP batch endpoint: POST → workers → relay."""
    bodies = http_bodies(count, per_request, "http-e2e")
    run.relay.reset()
    worker_cpu = run.fleet.cpu()
    start = time.time()
    api.post_batches(bodies)
    stats = run.relay.wait(count, timeout)
    end = stats["last"] if stats["unique"] >= count else time.time()
    return Result(
        name="maildispatch via HTTP batch",
        count=count,
        delivered=stats["unique"],
        seconds=end - start,
        duplicates=stats["duplicates"],
        cpu_us={"worker": cpu_per(worker_cpu, run.fleet.cpu(), count)},
    )
