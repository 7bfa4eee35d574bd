"""Peer baselines: what a Python team would install instead of maildispatch, in the same run.

``django-celery-email`` (Django's mail API, one Celery task per email or per chunk of 10, each
task opening an SMTP connection through Django's SMTP backend) and ``django-post_office`` with
its Celery integration (emails saved in a database, then a ``send_queued_mail`` task delivers
everything queued, five threads behind a file lock). Both run on a Redis broker with the Celery
worker's defaults (prefork, one process per core), against the bench relay; the Django project
is bench/peers_app/. Shapes: ``single`` is one call per email (a web app's per-request send),
``batch`` is one call for all of them (``send_mass_mail`` / ``mail.send_many``).

Try one alone: python -m bench.peers --design post_office --shape single --count 200 [--delay 0.02]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import REPO, Proc, RedisServer, Relay, children, cpu_seconds

DESIGNS = {"celery_email": "django-celery-email", "post_office": "django-post_office"}
SHAPES = ("single", "batch")
#: warm-up emails (sent the "single" way) so that every pool process has imported and connected
WARM = 8
#: with no new acceptance for this long the run is given up (a stuck email never arrives)
STALL = 30.0


@dataclass
class PeerResult:
    """One measured peer cell; the same fields as bench/scenarios.py's Result."""

    name: str
    count: int
    delivered: int
    seconds: float
    duplicates: int = 0
    cpu_us: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def rate(self) -> float:
        """Emails per second."""
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Did every email arrive exactly once?"""
        return self.delivered >= self.count and self.duplicates == 0


def label(design: str, shape: str) -> str:
    """``django-post_office 3.12.0 (single)``: the row's name, with the installed version."""
    package = DESIGNS[design]
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        version = "?"
    return f"{package} {version} ({shape})"


def run_peer(
    design: str,
    shape: str,
    relay_host: str,
    relay_port: int,
    broker_url: str,
    count: int,
    tmp: Path,
    wait: Callable[[int, float], dict[str, Any]],
    *,
    timeout: float | None = None,
) -> PeerResult:
    """Start the peer's worker, enqueue ``count`` emails the ``shape`` way, time their delivery.

    ``wait(n, seconds)`` blocks until the relay has ``n`` distinct Message-IDs (or the time is
    up) and returns its counts, as ``Relay.wait`` does. The relay is not reset: counts are taken
    relative to what it held before. ``timeout`` defaults to 120 s plus 0.5 s per email.
    """
    if design not in DESIGNS or shape not in SHAPES:
        raise ValueError(f"unknown design/shape {design!r}/{shape!r}")
    work = tmp / f"peers-{design}-{shape}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "bench.peers_app.settings",
        "BENCH_PEER_DESIGN": design,
        "BENCH_PEER_DIR": str(work),
        "BENCH_BROKER_URL": broker_url,
        "BENCH_RELAY_HOST": relay_host,
        "BENCH_RELAY_PORT": str(relay_port),
    }
    if design == "post_office":  # `django-admin migrate`, before any worker or clock
        _run([sys.executable, "-m", "django", "migrate", "--verbosity", "0"], env, 300)
    worker = Proc(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.peers_app.celery_app",
            "worker",
            # as bench/naive.py: only the start-up handshakes go, the delivery path is Celery's
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
        ],
        work / "worker.log",
        env,
    )
    try:
        _wait_log(worker, "ready", 90)
        tag = f"{design}-{shape}"
        base = wait(0, 0)["unique"]
        _produce(env, "single", WARM, f"{tag}-warm", wait, base + WARM, 60, worker)
        before = wait(0, 0)
        cpu0 = _settled_cpu(worker.pid)  # the warm-up's tail (lock losers) is not ours
        limit = timeout if timeout is not None else 120 + 0.5 * count
        out, stats = _produce(env, shape, count, tag, wait, before["unique"] + count, limit, worker)
        delivered = stats["unique"] - before["unique"]
        end = stats["last"] if delivered >= count else time.time()
        # the clock stops at the last 250, the CPU count once the worker is idle: post_office
        # marks rows sent and writes its Log rows after the SMTP work, in the same task
        worker_cpu = _settled_cpu(worker.pid) - cpu0
        note = f"enqueued in {out['end'] - out['start']:.2f}s"
        if delivered < count:
            note += f"; {count - delivered} missing after {end - out['start']:.0f}s"
        if design == "post_office":
            note += _post_office_rows(work / "post_office.sqlite3", WARM + count)
        failed = worker.log.read_text(errors="replace").count("raised unexpected")
        if failed:  # e.g. post_office's FileLock losing a race: FileExistsError, others deliver
            note += f"; {failed} task(s) raised in the worker log"
        return PeerResult(
            name=label(design, shape),
            count=count,
            delivered=delivered,
            seconds=end - out["start"],
            duplicates=stats["duplicates"] - before["duplicates"],
            cpu_us={
                "worker": round(worker_cpu / max(delivered, 1) * 1e6, 1),
                "producer": round(out["cpu"] / max(count, 1) * 1e6, 1),
            },
            note=note,
        )
    finally:
        _stop(worker)
        _drop_queue(broker_url, f"bench.peers.{design}")


def _produce(
    env: dict[str, str],
    shape: str,
    count: int,
    tag: str,
    wait: Callable[[int, float], dict[str, Any]],
    target: int,
    limit: float,
    worker: Proc,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run bench/peers_app/produce.py and wait for the relay: (its timing, the relay's counts)."""
    log = worker.log.with_name(f"produce-{tag}.log")
    with log.open("wb") as err:
        producer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.peers_app.produce",
                *("--shape", shape, "--count", str(count), "--tag", tag),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=REPO,
        )
        try:
            stats = _wait_relay(wait, target, limit, producer, worker)
            stdout, _ = producer.communicate(timeout=limit)
        finally:
            if producer.poll() is None:
                producer.kill()
                producer.wait()
    if producer.returncode != 0:
        raise RuntimeError(f"the {tag} producer failed:\n{log.read_text(errors='replace')[-3000:]}")
    out: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return out, stats


def _wait_relay(
    wait: Callable[[int, float], dict[str, Any]],
    target: int,
    limit: float,
    producer: subprocess.Popen[bytes],
    worker: Proc,
) -> dict[str, Any]:
    """The relay's counts once it holds ``target`` messages, the time is up or nothing moves."""
    deadline = time.monotonic() + limit
    progress = time.monotonic()
    seen = -1
    while True:
        stats: dict[str, Any] = wait(target, 1.0)
        now = time.monotonic()
        if stats["unique"] >= target or now > deadline:
            return stats
        if stats["unique"] != seen:
            seen, progress = stats["unique"], now
        elif now - progress > STALL and producer.poll() is not None:
            return stats
        if producer.poll() not in (None, 0):
            return stats  # the caller reports its error
        if worker.popen.poll() is not None:
            raise RuntimeError(f"the peer worker exited:\n{worker.tail()}")


def _run(args: list[str], env: dict[str, str], timeout: float) -> None:
    out = subprocess.run(
        args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{args[2:]} failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}")


def _wait_log(proc: Proc, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proc.log.read_text(errors="replace"):
            return
        if proc.popen.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{proc.args[:6]} did not become ready:\n{proc.tail()}")


def _tree_cpu(pid: int) -> float:
    """CPU seconds of the worker and its pool processes."""
    return cpu_seconds(pid) + sum(cpu_seconds(c) for c in children(pid))


def _settled_cpu(pid: int, quiet: float = 0.5, limit: float = 60.0) -> float:
    """The worker tree's CPU seconds once they stop growing (less than a tick in ``quiet`` s)."""
    tick = 1 / os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + limit
    last = _tree_cpu(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = _tree_cpu(pid)
        if now - last < tick:
            return now
        last = now
    return last


def _stop(worker: Proc) -> None:
    """SIGTERM the main process (Celery's warm shutdown), then its whole group, then SIGKILL."""
    if worker.popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.popen.wait(20)
    worker.stop()  # TERM then KILL to the process group: a pool process left behind goes too


def _post_office_rows(db: Path, expected: int) -> str:
    """``""`` when every Email row is marked sent, else how many are in which status."""
    names = {0: "sent", 1: "failed", 2: "queued", 3: "requeued"}
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        rows = dict(conn.execute("SELECT status, COUNT(*) FROM post_office_email GROUP BY status"))
    if rows == {0: expected}:
        return ""
    return "; rows " + ", ".join(f"{names.get(k, k)} {v}" for k, v in sorted(rows.items()))


def _drop_queue(broker_url: str, queue: str) -> None:
    """Delete the peer's queue (tasks left over, e.g. post_office's lock losers), nothing else."""
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        client.delete(queue, f"_kombu.binding.{queue}")
    finally:
        client.close()


def main() -> int:
    """Run one (or every) peer cell against a private redis-server and relay; print the figures."""
    ap = argparse.ArgumentParser(description="Peer baselines against the bench relay.")
    ap.add_argument("--design", choices=(*DESIGNS, "all"), default="all")
    ap.add_argument("--shape", choices=(*SHAPES, "all"), default="all")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each relay reply")
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the logs and the SQLite file")
    args = ap.parse_args()
    designs = list(DESIGNS) if args.design == "all" else [args.design]
    shapes = list(SHAPES) if args.shape == "all" else [args.shape]
    tmp = Path(tempfile.mkdtemp(prefix="maildispatch-peers-"))
    redis = RedisServer(tmp)
    relay = Relay(tmp, delay=args.delay)
    ok = True
    try:
        for design in designs:
            for shape in shapes:
                relay.reset()
                r = run_peer(
                    design,
                    shape,
                    "127.0.0.1",
                    relay.port,
                    f"redis://127.0.0.1:{redis.port}/3",
                    args.count,
                    tmp,
                    relay.wait,
                    timeout=args.timeout,
                )
                ok = ok and r.complete
                cpu = "  ".join(f"{k} {v:,.0f} µs" for k, v in r.cpu_us.items())
                print(
                    f"{r.name:<34} delay {args.delay:g}s  {r.delivered}/{r.count} in "
                    f"{r.seconds:.2f}s = {r.rate:,.1f} emails/s  dup {r.duplicates}  "
                    f"CPU/email: {cpu}  ({r.note})",
                    flush=True,
                )
    finally:
        relay.stop()
        redis.stop()
    if ok and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"logs kept in {tmp}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
