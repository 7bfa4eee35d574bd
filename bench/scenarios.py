"""The bench's measurements, one function each; bench/run.py orders them and prints the table.

Every throughput is the wall time from the first enqueue (or the first connection, for the
ceiling) to the relay's last 250, for the same ~2 KB messages counted by Message-ID at the same
relay process. CPU per email is read from /proc for each process involved (a process tree:
children included). After every maildispatch run each job's state is read back from Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import msc
from bench.common import (
    BENCH,
    BODY,
    REPO,
    Proc,
    RedisServer,
    Relay,
    cpu_seconds,
    job,
    tree_cpu,
)


@dataclass
class Result:
    """One measured row."""

    name: str
    count: int
    delivered: int
    seconds: float
    duplicates: int = 0
    cpu_us: dict[str, float] = field(default_factory=dict)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: final state -> jobs, read from Redis after the run (maildispatch only)
    states: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Emails (or jobs) per second."""
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Did everything arrive (once)?"""
        return self.delivered >= self.count


def cpu_per(pids_cpu_before: float, pids_cpu_after: float, n: int) -> float:
    """Microseconds of CPU per email between two readings."""
    return round((pids_cpu_after - pids_cpu_before) / max(n, 1) * 1e6, 1)


# -- the ceiling ---------------------------------------------------------------------------------
def ceiling(
    relay: Relay, count: int, label: str, processes: int = 1, connections: int = 32
) -> Result:
    """Raw aiosmtplib in ``processes`` processes of ``connections`` concurrent connections each,
    pre-built messages; every process starts sending at once (after all built theirs)."""
    relay.reset()
    relay_cpu = cpu_seconds(relay.proc.pid)
    shares = [count // processes + (1 if k < count % processes else 0) for k in range(processes)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "ceiling.py"),
                "--port",
                str(relay.port),
                "--count",
                str(share),
                "--connections",
                str(connections),
                "--run",
                f"{label}-p{k}",
                "--go",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for k, share in enumerate(shares)
    ]
    try:
        for k, proc in enumerate(procs):  # each has built its messages
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"ceiling client {label}-p{k} did not start")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        infos = []
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            if proc.returncode:
                raise RuntimeError(f"ceiling client failed ({proc.returncode})")
            infos.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    start = min(info["start"] for info in infos)
    stats = relay.wait(count, 30)
    end = stats["last"] if stats["unique"] >= count else time.time()
    return Result(
        name=label,
        count=count,
        delivered=stats["unique"],
        seconds=end - start,
        duplicates=stats["duplicates"],
        cpu_us={
            "client": round(sum(info["cpu"] for info in infos) / max(count, 1) * 1e6, 1),
            "relay": cpu_per(relay_cpu, cpu_seconds(relay.proc.pid), count),
        },
    )


# -- the naive baseline ----------------------------------------------------------------------------
def naive(
    redis: RedisServer, relay: Relay, tmp: Path, count: int, timeout: float, label: str
) -> Result:
    """One Celery task per email, a new smtplib connection each; Celery's default worker."""
    from bench.naive import TASK, make_app, task_args

    broker = f"redis://127.0.0.1:{redis.port}/2"
    env = msc.worker_env(redis.url, relay.url, tmp) | {
        "BENCH_BROKER_URL": broker,
        "BENCH_RELAY_PORT": str(relay.port),
    }
    worker = Proc(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.naive",
            "worker",
            "-Q",
            "bench.naive",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
        ],
        tmp / f"naive-{label}.log",
        env,
    )
    app = make_app(broker)
    try:
        _wait_log(worker, "ready", 90)
        with app.producer_or_acquire() as producer:  # warm: both worker processes started
            for i in range(4):
                app.send_task(TASK, args=task_args(i, f"warm-{label}", BODY), producer=producer)
        relay.wait(4, 30)
        relay.reset()
        cpu0 = tree_cpu(worker.pid)
        relay_cpu = cpu_seconds(relay.proc.pid)
        start = time.time()
        with app.producer_or_acquire() as producer:
            for i in range(count):
                app.send_task(TASK, args=task_args(i, label, BODY), producer=producer)
        stats = relay.wait(count, timeout)
        end = stats["last"] if stats["unique"] >= count else time.time()
        delivered = stats["unique"]
        note = "" if delivered >= count else f"time-boxed at {timeout:.0f}s"
        return Result(
            name=label,
            count=count,
            delivered=delivered,
            seconds=end - start,
            duplicates=stats["duplicates"],
            cpu_us={
                "worker": cpu_per(cpu0, tree_cpu(worker.pid), delivered),
                "relay": cpu_per(relay_cpu, cpu_seconds(relay.proc.pid), delivered),
            },
            note=note,
        )
    finally:
        worker.stop()
        app.close()
        redis.client.execute_command("SELECT", 2)
        redis.client.flushdb()
        redis.client.execute_command("SELECT", 0)


def _wait_log(proc: Proc, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proc.log.read_text(errors="replace"):
            return
        if proc.popen.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{proc.args[:6]} did not become ready:\n{proc.tail()}")


# -- maildispatch ------------------------------------------------------------------------------------
class MscRun:
    """The Procfile's ``msc`` line, started once, and a producer bound to the same settings."""

    def __init__(
        self,
        redis: RedisServer,
        relay: Relay,
        tmp: Path,
        tag: str,
        dkim: tuple[str, str] | None = None,
        broker_url: str | None = None,
    ) -> None:
        from producers.client import Dispatcher

        self.redis = redis
        self.relay = relay
        self.env = msc.worker_env(redis.url, relay.url, tmp, dkim, broker_url)
        self.fleet = msc.Fleet(self.env, tmp, tag)
        try:
            self.fleet.wait_ready()
            self.dispatcher = Dispatcher(msc.settings_from(self.env))
            warm = msc.jobs(300, f"warm-{tag}")  # every worker process opens its connections
            msc.deliver(self.dispatcher, relay, warm, 60)
        except BaseException:
            self.fleet.stop()
            raise

    def run(self, count: int, label: str, timeout: float, sample_rss: bool = False) -> Result:
        """send_many ``count`` jobs, wait for the relay to count them, read their states."""
        items = msc.jobs(count, label)
        samples: list[tuple[int, int]] = []
        stop = threading.Event()
        sampler: threading.Thread | None = None
        self.relay.reset()
        if sample_rss:
            view = _RelayView(self.relay)  # its own control connection: the main one waits

            def sample() -> None:  # (delivered so far, RSS of the line's processes)
                while not stop.wait(0.5):
                    samples.append((view.stats()["unique"], self.fleet.rss()))

            sampler = threading.Thread(target=sample, daemon=True)
        redis_cpu = cpu_seconds(self.redis.proc.pid)
        relay_cpu = cpu_seconds(self.relay.proc.pid)
        worker_cpu = self.fleet.cpu()
        producer_cpu = time.process_time()
        if sampler is not None:
            sampler.start()
        out = msc.deliver(self.dispatcher, self.relay, items, timeout, reset=False)
        producer = time.process_time() - producer_cpu
        stop.set()
        if sampler is not None:
            sampler.join()
            samples.append((out["delivered"], self.fleet.rss()))
        cpu = {
            "worker": cpu_per(worker_cpu, self.fleet.cpu(), count),
            "relay": cpu_per(relay_cpu, cpu_seconds(self.relay.proc.pid), count),
            "redis": cpu_per(redis_cpu, cpu_seconds(self.redis.proc.pid), count),
            "producer": round(producer / max(count, 1) * 1e6, 1),
        }
        return Result(
            name=label,
            count=count,
            delivered=out["delivered"],
            seconds=out["seconds"],
            duplicates=out["duplicates"],
            cpu_us=cpu,
            note=f"enqueued at {count / max(out['enqueue_s'], 1e-9):,.0f} jobs/s; "
            + msc.processes(self.fleet.workers()),
            extra={"rss": samples, "ids": out["ids"]},
            states=msc.wait_final(self.dispatcher, out["ids"]),
        )

    def stop(self) -> None:
        """Stop the line and close the producer."""
        self.fleet.stop()
        self.dispatcher.close()


def clean(redis: RedisServer) -> None:
    """Forget every job, queue and key between two designs (nothing left over is delivered
    into the next one's count)."""
    redis.client.flushall()


def offers_pipelining(relay: Relay) -> bool:
    """Does the relay's EHLO answer offer PIPELINING (RFC 2920)?"""
    import smtplib

    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="bench.test", timeout=10) as smtp:
        smtp.ehlo()
        return bool(smtp.has_extn("pipelining"))


@contextlib.contextmanager
def rabbit_vhost(tag: str) -> Iterator[str]:
    """A fresh RabbitMQ virtual host for one run (deleted after, queues and all): the broker URL.

    Only the vhost this creates is touched; the machine's default vhost is left alone.
    """
    name = f"maildispatch-bench-{os.getpid()}-{tag}"

    def ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)

    ctl("add_vhost", name)
    try:
        ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        ctl("delete_vhost", name)


class _RelayView:
    """A second control connection to the relay, for a sampling thread."""

    def __init__(self, relay: Relay) -> None:
        import socket

        self._sock = socket.create_connection(("127.0.0.1", relay.control_port))
        self._file = self._sock.makefile("rwb")

    def stats(self) -> dict[str, Any]:
        """Counts so far."""
        self._file.write(b"STATS\n")
        self._file.flush()
        result: dict[str, Any] = json.loads(self._file.readline())
        return result


# -- latency, memory, DKIM cost ------------------------------------------------------------------------
def latency(run: MscRun, sends: int) -> dict[str, float]:
    """One ``send`` at a time on an idle fleet: enqueue → the relay's 250, in milliseconds."""
    run.relay.reset()
    for i in range(10):  # warm: each worker process has a connection open
        run.dispatcher.send(job(i, "warm-latency"))
        run.relay.wait(i + 1, 10)
    run.relay.reset()
    times = []
    for i in range(sends):
        time.sleep(0.02)  # idle between sends
        start = time.time()
        run.dispatcher.send(job(i, "latency"))
        stats = run.relay.wait(i + 1, 10)
        times.append((stats["last"] - start) * 1000)
    times.sort()
    return {
        "sends": sends,
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, round(len(times) * 0.99) - 1)],
        "max_ms": times[-1],
    }


def keys_without_ttl(redis: RedisServer) -> tuple[int, list[str]]:
    """(maildispatch keys, those without a TTL) in the bench Redis, bounded structures aside.

    The schedules, the event streams, the in-flight set, counters and metrics are one key each whatever the number
    of jobs; the broker's queues are Celery's. Anything else kept forever would grow per job.
    """
    from config import keys

    fixed = {
        k.encode()
        for k in (
            *keys.SCHEDULES,
            *keys.EVENTS,  # trimmed by time (MAILDISPATCH_EVENTS_RETENTION), not expired
            keys.PREFERRED_CHANNEL,
            keys.COUNTERS,
            keys.DELIVERIES,
            keys.LATENCY,
            keys.INFLIGHT,
        )
    }
    names = [k for k in redis.client.scan_iter(match="md:*", count=2000) if k not in fixed]
    missing: list[str] = []
    pipe = redis.client.pipeline(transaction=False)
    for start in range(0, len(names), 2000):
        chunk = names[start : start + 2000]
        for k in chunk:
            pipe.ttl(k)
        missing += [k.decode() for k, ttl in zip(chunk, pipe.execute(), strict=True) if ttl == -1]
    return len(names), missing


def dkim_costs() -> dict[str, float]:
    """Microseconds per message to build a ~2 KB message: unsigned, Ed25519, RSA-2048."""
    import base64

    import nacl.signing
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from bench.common import DOMAIN
    from producers.job import SendJob
    from worker.message.build import build_message
    from worker.message.dkim import DkimKey

    seed = base64.b64encode(bytes(nacl.signing.SigningKey.generate()))
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    jobs = [SendJob.model_validate(job(i, "dkim")) for i in range(400)]
    out = {}
    for name, key in (
        ("none", None),
        ("ed25519", DkimKey(DOMAIN, "bench", seed)),
        ("rsa2048", DkimKey(DOMAIN, "bench", pem)),
    ):
        build_message(jobs[0], domain=DOMAIN, dkim_key=key)
        start = time.perf_counter()
        for j in jobs:
            build_message(j, domain=DOMAIN, sender=f"mailer@{DOMAIN}", dkim_key=key)
        out[name] = (time.perf_counter() - start) / len(jobs) * 1e6
    return out


def write_dkim_keys(tmp: Path) -> dict[str, tuple[str, str]]:
    """Key files for the fleet: an Ed25519 seed and an RSA-2048 PEM."""
    import base64

    import nacl.signing
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    ed = tmp / "dkim-ed25519.key"
    ed.write_bytes(base64.b64encode(bytes(nacl.signing.SigningKey.generate())))
    pem = tmp / "dkim-rsa.pem"
    pem.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return {"ed25519": (str(ed), "bench"), "rsa": (str(pem), "bench")}


def bounces(quick: bool) -> dict[str, float] | None:
    """bench/bench_bounces.py's figure (its own last line), or None when it cannot run."""
    script = BENCH / "bench_bounces.py"
    if not script.exists():
        return None
    out = subprocess.run(
        [sys.executable, str(script), *(["--quick"] if quick else [])],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("bounce-bench:"):
            fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
            return {k: float(v) for k, v in fields.items()}
    return {"error": 1.0} if out.returncode else None
