"""Single sends in the bench: drains, streams from producer processes, paced latency, and the
latency of single sends behind a bulk backlog.

Run as a script it is one producing process, with the bench's ``MAILDISPATCH_*`` environment::

    python bench/singles.py --label L --count N [--rate R] [--offset S] [--until-stop]

It makes one warm ``send``, prints ``ready``, waits for ``go <t0>`` on stdin, then makes one
``Dispatcher.send`` per job: as fast as it can, or ``R`` a second from ``t0 + S``, evenly
spaced; with ``--until-stop`` it goes on until ``stop`` arrives on stdin. It prints one JSON line:
``sent`` ([job id, wall-clock time just before its ``send``] per job) and ``cpu`` (seconds).

Latencies are enqueue → 250: the relay keeps no time per message, so the time a job was accepted
is the ``updated_at`` its worker wrote with the ``sent`` state, right after the relay's 250 (in
the same event-loop iteration's finish pipeline), minus the time its producer called ``send``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import msc
from bench.common import BENCH, REPO, RedisServer, Relay, cpu_seconds, job
from bench.scenarios import MscRun, Result


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (0.0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(max(math.ceil(q * len(ordered)), 1), len(ordered)) - 1]


class Producers:
    """``n`` producing processes (this file as a script), started together on a shared clock."""

    def __init__(
        self,
        env: dict[str, str],
        tmp: Path,
        n: int,
        label: str,
        count: int,
        rate: float = 0.0,
        until_stop: bool = False,
    ) -> None:
        shares = [count // n + (1 if k < count % n else 0) for k in range(n)]
        self.labels = [f"{label}-p{k}" for k in range(n)]
        self._logs = [(tmp / f"producer-{label}-{k}.log").open("w") for k in range(n)]
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(BENCH / "singles.py"),
                    "--label",
                    self.labels[k],
                    "--count",
                    str(share),
                    "--rate",
                    str(rate / n),
                    "--offset",
                    str(k / rate if rate else 0.0),
                    *(["--until-stop"] if until_stop else []),
                ],
                env=env,
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._logs[k],
                text=True,
            )
            for k, share in enumerate(shares)
        ]

    def ready(self) -> None:
        """Until every process has made its warm send."""
        for name, proc in zip(self.labels, self.procs, strict=True):
            if _pipe(proc.stdout).readline().strip() != "ready":
                raise RuntimeError(f"producer {name} did not start (see its log)")

    def go(self, delay: float = 0.3) -> float:
        """Start them all at ``now + delay``; that time."""
        t0 = time.time() + delay
        self._say(f"go {t0}")
        return t0

    def stop(self) -> None:
        """Tell ``--until-stop`` processes to stop sending."""
        self._say("stop")

    def results(self, timeout: float) -> list[dict[str, Any]]:
        """Each process's JSON line, once it exits."""
        out = []
        for name, proc in zip(self.labels, self.procs, strict=True):
            text, _ = proc.communicate(timeout=timeout)
            if proc.returncode:
                raise RuntimeError(f"producer {name} failed ({proc.returncode}, see its log)")
            out.append(json.loads(text.strip().splitlines()[-1]))
        return out

    def close(self) -> None:
        """Kill what still runs (a failed part), close the logs."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()

    def _say(self, line: str) -> None:
        for proc in self.procs:
            stdin = _pipe(proc.stdin)
            stdin.write(line + "\n")
            stdin.flush()


def _pipe(stream: IO[str] | None) -> IO[str]:
    assert stream is not None
    return stream


def _started(run: MscRun, group: Producers, n: int) -> None:
    """Wait for the producers' warm sends to arrive, then forget them at the relay."""
    group.ready()
    run.relay.wait(n, 60)
    run.relay.reset()


def _latencies(run: MscRun, sent: list[tuple[str, float]]) -> tuple[list[float], dict[str, int]]:
    """Enqueue → 250 in ms of every job sent, and the jobs' final states."""
    ids = [job_id for job_id, _ in sent]
    states = msc.wait_final(run.dispatcher, ids)
    fields = msc.job_fields(run.dispatcher, ids)
    lat = [
        (updated - t) * 1000
        for (_, t), (state, updated) in zip(sent, fields, strict=True)
        if state == "sent"
    ]
    return lat, states


# -- the scenarios ----------------------------------------------------------------------------------
def stream(run: MscRun, tmp: Path, count: int, label: str, timeout: float, n: int = 4) -> Result:
    """``n`` processes each calling ``send`` as fast as they can, the fleet running: emails per
    second from the first enqueue to the last 250."""
    run.relay.reset()
    group = Producers(run.env, tmp, n, label, count)
    try:
        _started(run, group, n)
        worker_cpu, relay_cpu = run.fleet.cpu(), cpu_seconds(run.relay.proc.pid)
        group.go()
        outs = group.results(timeout)
        sent = [(job_id, t) for out in outs for job_id, t in out["sent"]]
        start, enqueued = min(t for _, t in sent), max(t for _, t in sent)
        stats = run.relay.wait(count, timeout)
        end = stats["last"] if stats["unique"] >= count else time.time()
        cpu = {
            "worker": round((run.fleet.cpu() - worker_cpu) / count * 1e6, 1),
            "relay": round((cpu_seconds(run.relay.proc.pid) - relay_cpu) / count * 1e6, 1),
            "producer": round(sum(out["cpu"] for out in outs) / count * 1e6, 1),
        }
        return Result(
            name=label,
            count=count,
            delivered=stats["unique"],
            seconds=end - start,
            duplicates=stats["duplicates"],
            cpu_us=cpu,
            note=f"enqueued at {count / max(enqueued - start, 1e-9):,.0f} jobs/s",
            states=msc.wait_final(run.dispatcher, [job_id for job_id, _ in sent]),
        )
    finally:
        group.close()


def paced(
    run: MscRun, tmp: Path, rate: float, seconds: float, label: str, n: int = 4
) -> dict[str, Any]:
    """``n`` processes sending ``rate`` emails a second in all, evenly spaced, the fleet running:
    enqueue → 250 of every job."""
    count = max(n, round(rate * seconds))
    run.relay.reset()
    group = Producers(run.env, tmp, n, label, count, rate=rate)
    try:
        _started(run, group, n)
        group.go()
        outs = group.results(seconds + 120)
    finally:
        group.close()
    sent = [(job_id, t) for out in outs for job_id, t in out["sent"]]
    stats = run.relay.wait(count, 30)
    lat, states = _latencies(run, sent)
    times = [t for _, t in sent]
    return {
        "rate": rate,
        "producers": n,
        "sends": count,
        "achieved_per_s": (count - 1) / max(max(times) - min(times), 1e-9),
        "delivered": stats["unique"],
        "duplicates": stats["duplicates"],
        "p50_ms": percentile(lat, 0.50),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": max(lat, default=0.0),
        "states": states,
    }


def backlog(run: MscRun, tmp: Path, count: int, label: str, timeout: float) -> dict[str, Any]:
    """A ``send_many`` of ``count`` jobs draining through the fleet while another process makes
    one ``send`` every 100 ms: enqueue → 250 of those single sends."""
    run.relay.reset()
    sender = Producers(run.env, tmp, 1, f"{label}-single", 10**7, rate=10.0, until_stop=True)
    try:
        _started(run, sender, 1)
        items = msc.jobs(count, label)
        sender.go(0.0)
        start = time.time()
        ids = run.dispatcher.send_many(items)
        enqueued = time.time()
        drained = run.relay.wait(count, timeout)  # (a few singles counted in: near enough)
        sender.stop()
        out = sender.results(60)[0]
    finally:
        sender.close()
    sent = [(job_id, t) for job_id, t in out["sent"]]
    stats = run.relay.wait(count + len(sent), 30)
    lat, states = _latencies(run, sent)
    bulk = msc.wait_final(run.dispatcher, ids)
    return {
        "backlog": count,
        "enqueue_per_s": count / max(enqueued - start, 1e-9),
        "drain_per_s": drained["unique"] / max(drained["last"] - start, 1e-9),
        "singles": len(sent),
        "delivered": stats["unique"],
        "duplicates": stats["duplicates"],
        "p50_ms": percentile(lat, 0.50),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": max(lat, default=0.0),
        "states": states,
        "backlog_states": bulk,
    }


def drain(
    redis: RedisServer,
    relay: Relay,
    tmp: Path,
    label: str,
    count: int,
    single: bool,
    timeout: float,
    broker_url: str | None = None,
    settings: Mapping[str, str] | None = None,
) -> Result:
    """``count`` jobs enqueued with the ``msc`` line stopped (one ``send`` each, or one
    ``send_many``), then the line started once: emails per second from the relay's first 250
    to its last. ``settings``: ``MAILDISPATCH_*`` variables that differ from the defaults."""
    from producers.client import Dispatcher

    env = msc.worker_env(redis.url, relay.url, tmp, broker_url=broker_url) | dict(settings or {})
    dispatcher = Dispatcher(msc.settings_from(env))
    fleet: msc.Fleet | None = None
    try:
        items = msc.jobs(count, label)
        relay.reset()
        cpu, start = time.process_time(), time.time()
        ids = [dispatcher.send(j) for j in items] if single else dispatcher.send_many(items)
        enqueue_s, producer_cpu = time.time() - start, time.process_time() - cpu
        fleet = msc.Fleet(env, tmp, label)
        first = relay.wait(1, timeout)
        if not first["unique"]:
            raise RuntimeError(f"nothing arrived in {timeout:.0f}s:\n{fleet.proc.tail()}")
        worker_cpu, relay_cpu = fleet.cpu(), cpu_seconds(relay.proc.pid)
        stats = relay.wait(count, timeout)
        end = stats["last"] if stats["unique"] >= count else time.time()
        delivered = max(stats["unique"] - 1, 1)  # after the first 250
        cpu_us = {
            "worker": round((fleet.cpu() - worker_cpu) / delivered * 1e6, 1),
            "relay": round((cpu_seconds(relay.proc.pid) - relay_cpu) / delivered * 1e6, 1),
            "producer": round(producer_cpu / count * 1e6, 1),
        }
        note = f"enqueued in {enqueue_s:.1f}s, line stopped; {msc.processes(fleet.workers())}"
        if stats["unique"] < count:
            note += f"; time-boxed at {timeout:.0f}s"
        return Result(
            name=label,
            count=count,
            delivered=stats["unique"],
            seconds=max(end - first["first"], 1e-9),
            duplicates=stats["duplicates"],
            cpu_us=cpu_us,
            note=note,
            states=msc.wait_final(dispatcher, ids),
        )
    finally:
        if fleet is not None:
            fleet.stop()
        dispatcher.close()


# -- the producing process ------------------------------------------------------------------------
def main() -> None:
    """One producing process: warm send, ready, wait for go, send, print what was sent when."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--label", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rate", type=float, default=0.0, help="sends per second (0: at once)")
    ap.add_argument("--offset", type=float, default=0.0, help="seconds after t0 of the first")
    ap.add_argument("--until-stop", action="store_true", help="stop at a 'stop' line on stdin")
    args = ap.parse_args()
    from producers.client import Dispatcher

    dispatcher = Dispatcher()
    try:
        dispatcher.send(job(0, f"warm-{args.label}"))
        print("ready", flush=True)
        words = sys.stdin.readline().split()
        t0 = float(words[1]) if len(words) > 1 else time.time()
        stop = threading.Event()
        if args.until_stop:

            def wait_stop() -> None:
                sys.stdin.readline()
                stop.set()

            threading.Thread(target=wait_stop, daemon=True).start()
        items = [job(i, args.label) for i in range(args.count)] if not args.until_stop else []
        delay = t0 - time.time()
        if delay > 0:
            time.sleep(delay)
        cpu = time.process_time()
        sent: list[tuple[str, float]] = []
        i = 0
        while i < args.count and not stop.is_set():
            if args.rate:
                wait = t0 + args.offset + i / args.rate - time.time()
                if wait > 0 and stop.wait(wait):
                    break
            item = items[i] if items else job(i, args.label)
            now = time.time()
            sent.append((str(dispatcher.send(item)), now))
            i += 1
        print(json.dumps({"sent": sent, "cpu": time.process_time() - cpu}), flush=True)
    finally:
        dispatcher.close()


if __name__ == "__main__":
    main()
