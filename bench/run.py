"""maildispatch's bench: the designs side by side in one run, against the same relay process.

Usage: python bench/run.py [--quick | --smoke] [--broker redis|amqp] [--json FILE] [--keep]

- ceiling: raw aiosmtplib, 32 concurrent connections per process, messages built beforehand
  (bench/ceiling.py): one process (the baseline of the targets), and as many processes as the
  ``msc`` line runs workers
- naive: one Celery task per email, a new smtplib connection each (bench/naive.py)
- maildispatch: the Procfile's ``msc`` line started once, fed by ``send_many`` (batch), by
  ``send`` from four producer processes (stream, paced) or drained from a queue filled while
  the line was stopped; every job's final state read back from Redis, the relay counting every
  message by Message-ID (bench/relay.py)
- peers (bench/peers.py, when it exists): django-celery-email, django-post_office

with a relay that answers at once and one that waits 20 ms before every reply. Each design runs
several times, interleaved (A B C A B C ...); the table shows the median and the spread. Then
the producer (send_many, HTTP batch intake), single-send latency on an idle fleet and behind a
bulk backlog, Redis bytes per queued job, memory across the longest run, 1k/10k/100k scaling,
bounce parsing, DKIM cost, the message history writer (bench/history.py), webhook delivery by
the events line (bench/webhooks.py) and, with RabbitMQ running, job state on a Redis Cluster
with 1, 2 and 4 worker processes (bench/scaleout.py). Every figure is printed with its ratio to the
baselines measured in this same run, so a busy machine slows all designs alike. Timing never fails the bench: it
exits non-zero only when a part could not run at all. It starts its own redis-server (AOF on,
fsync every second) and relays on free ports and stops them.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import history, hotstate, intake, msc, peer_cells, report, scaleout, singles, webhooks
from bench import scenarios as sc
from bench.common import RedisServer, Relay, machine
from bench.profiles import PACED_RATE, PROFILES, SLOW, timebox
from bench.scenarios import Result


class Bench:
    """Runs the parts in order, keeps what they measured, survives a part that fails."""

    def __init__(self, profile: str, tmp: Path, redis: RedisServer) -> None:
        self.size = PROFILES[profile]
        self.profile = profile
        self.tmp = tmp
        self.redis = redis
        self.rows: dict[str, list[Result]] = {}
        self.figures: dict[str, Any] = {}
        self.failed: list[str] = []
        self.api: intake.Api | None = None
        self.keys = sc.write_dkim_keys(tmp)

    def part(self, name: str, fn: Callable[[], None]) -> None:
        """Run one part; a crash is reported and the bench goes on."""
        started = time.monotonic()
        print(f"… {name}", file=sys.stderr, flush=True)
        try:
            fn()
        except Exception:
            self.failed.append(name)
            print(f"!! {name} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        print(f"   {name}: {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)

    def add(self, key: str, row: Result) -> None:
        """Keep one run of a design."""
        self.rows.setdefault(key, []).append(row)

    def interleaved(self, tag: str, designs: list[tuple[str, Callable[[int], None]]]) -> None:
        """Every design once per repetition, in the same order: A B C A B C ..."""
        reps = self.size["reps"]
        for rep in range(reps):
            for name, fn in designs:
                self.part(f"{name} ({tag}, run {rep + 1}/{reps})", functools.partial(fn, rep))

    # -- producers ----------------------------------------------------------------------------------
    def producers(self) -> None:
        """send_many of the producer count with no worker; Redis bytes per queued job."""
        self.figures["producer"] = intake.producer(self.redis, self.tmp, self.size["producer"])

    def http(self, relay: Relay) -> None:
        """The HTTP batch intake (its server kept for later)."""
        env = msc.worker_env(self.redis.url, relay.url, self.tmp)
        self.api = intake.Api(env, self.tmp)
        self.figures["http"] = intake.http_intake(
            self.api, self.redis, self.size["http"], self.size["per_request"]
        )

    # -- one relay -----------------------------------------------------------------------------
    def relay_round(self, relay: Relay, tag: str, nopipe: Relay | None = None) -> None:
        """The designs on one relay, interleaved; then what runs once (fast relay)."""
        n = self.size["n"] if tag == "fast" else self.size["n_slow"]
        naive_n = self.size["naive"] if tag == "fast" else self.size["naive_slow"]
        drain_n = self.size["drain"] if tag == "fast" else self.size["drain_slow"]
        last = self.size["reps"] - 1

        def ceiling1(rep: int) -> None:
            self.add(f"ceiling-{tag}", sc.ceiling(relay, n, f"ceiling1-{tag}-{rep}"))

        def ceiling_n(rep: int) -> None:
            label = f"ceilingN-{tag}-{rep}"
            self.add(f"ceilingN-{tag}", sc.ceiling(relay, n, label, msc.MSC_PROCESSES))

        def naive(rep: int) -> None:
            timeout = 300.0 if tag == "fast" else max(10.0, naive_n / 8)
            label = f"naive-{tag}-{rep}"
            row = sc.naive(self.redis, relay, self.tmp, naive_n, timeout, label)
            self.add(f"naive-{tag}", row)

        def plain(rep: int) -> None:
            self.fleet_slot(relay, tag, rep, n, once=tag == "fast" and rep == last)

        def signed(kind: str) -> Callable[[int], None]:
            key = f"msc-{tag}-{'dkim' if kind == 'ed25519' else kind}"

            def run(rep: int) -> None:
                self.batch_only(relay, key, n, rep, self.keys[kind])

            return run

        def no_pipelining(rep: int) -> None:
            assert nopipe is not None
            self.batch_only(nopipe, f"msc-{tag}-nopipe", n, rep)

        def drain(single: bool, history: bool = True) -> Callable[[int], None]:
            kind = ("single" if single else "batch") + ("" if history else "-nohist")
            off = {} if history else {"MAILDISPATCH_HISTORY_DAYS": "0"}

            def run(rep: int) -> None:
                self.drain(relay, tag, f"drain-{kind}-{tag}", rep, drain_n, single, settings=off)

            return run

        designs: list[tuple[str, Callable[[int], None]]] = [
            ("ceiling, 1 process", ceiling1),
            (f"ceiling, {msc.MSC_PROCESSES} processes", ceiling_n),
            ("naive", naive),
            ("maildispatch", plain),
            ("maildispatch + DKIM ed25519", signed("ed25519")),
        ]
        if tag == "fast" and self.size["rsa"]:
            designs.append(("maildispatch + DKIM rsa-2048", signed("rsa")))
        if nopipe is not None:
            designs.append(("maildispatch, relay without PIPELINING", no_pipelining))
        designs += [("drain: send() per job", drain(True)), ("drain: send_many", drain(False))]
        if tag == "fast":  # what the message history costs the delivery path
            designs.append(("drain: send_many, history off", drain(False, history=False)))
        if tag in self.size["peer_relays"]:
            designs += self.peer_designs(relay, tag)
        self.interleaved(f"{tag} relay", designs)

    def drain(
        self,
        relay: Relay,
        tag: str,
        key: str,
        rep: int,
        count: int,
        single: bool,
        broker_url: str | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        """One drain (bench/singles.py) kept under ``key``; the private Redis cleaned after."""
        try:
            row = singles.drain(
                self.redis,
                relay,
                self.tmp,
                f"{key}-{rep}",
                count,
                single,
                timebox(tag, count),
                broker_url=broker_url,
                settings=settings,
            )
        finally:
            sc.clean(self.redis)
        self.add(key, row)

    def fleet_slot(self, relay: Relay, tag: str, rep: int, n: int, once: bool) -> None:
        """The msc line started once: send_many, then single sends from four producers (all out,
        then paced); in the last repetition on the fast relay, what runs once."""
        run = sc.MscRun(self.redis, relay, self.tmp, f"{tag}-plain-{rep}")
        stream_n = self.size["stream"] if tag == "fast" else self.size["stream_slow"]
        try:
            self.add(f"msc-{tag}", run.run(n, f"md-{tag}-{rep}", timebox(tag, n), sample_rss=True))
            self.part(
                f"send() from 4 producers ({tag})",
                lambda: self.add(
                    f"stream-{tag}",
                    singles.stream(
                        run, self.tmp, stream_n, f"stream-{tag}-{rep}", timebox(tag, stream_n)
                    ),
                ),
            )
            self.part(
                f"paced send() ({tag})",
                lambda: self.figures.setdefault(f"paced-{tag}", []).append(
                    singles.paced(
                        run, self.tmp, PACED_RATE, self.size["paced_s"], f"paced-{tag}-{rep}"
                    )
                ),
            )
            if once:
                self.once(run, n)
        finally:
            run.stop()
            sc.clean(self.redis)

    def batch_only(
        self, relay: Relay, key: str, n: int, rep: int, dkim: tuple[str, str] | None = None
    ) -> None:
        """The msc line started once, one send_many."""
        tag = "fast" if "fast" in key else "slow"
        run = sc.MscRun(self.redis, relay, self.tmp, f"{key}-{rep}", dkim=dkim)
        try:
            self.add(key, run.run(n, f"{key}-{rep}", timebox(tag, n)))
        finally:
            run.stop()
            sc.clean(self.redis)

    def once(self, run: sc.MscRun, n: int) -> None:
        """On the fast relay's fleet: HTTP delivery, idle latency, backlog latency, scaling."""
        if self.api is not None:
            api = self.api
            self.part(
                "maildispatch via HTTP batch",
                lambda: self.add(
                    "msc-http",
                    intake.http_delivery(api, run, n, self.size["per_request"], timebox("fast", n)),
                ),
            )
        self.part("latency on an idle fleet", lambda: self._latency(run))
        self.part("latency behind a bulk backlog", lambda: self._backlog(run))
        self.part("scaling", lambda: self._scaling(run))

    def _latency(self, run: sc.MscRun) -> None:
        time.sleep(1.0)  # let the fleet settle: idle means idle
        self.figures["latency"] = sc.latency(run, self.size["latency"])

    def _backlog(self, run: sc.MscRun) -> None:
        count = self.size["backlog"]
        self.figures["backlog"] = singles.backlog(
            run, self.tmp, count, "backlog", timebox("fast", count)
        )

    def _scaling(self, run: sc.MscRun) -> None:
        points = []
        for count in self.size["scaling"]:
            before = self.redis.used_memory()
            row = run.run(count, f"scale-{count}", timebox("fast", count), sample_rss=True)
            after = self.redis.used_memory()
            rss = row.extra["rss"]
            # drift: from the first sample past 10% of the run (pools and caches warm) to the end
            warm = next((r for d, r in rss if d >= count * 0.1), rss[0][1] if rss else 0)
            last = rss[-1][1] if rss else 0
            total, no_ttl = sc.keys_without_ttl(self.redis)
            points.append(
                {
                    "count": count,
                    "rate": row.rate,
                    "complete": row.complete,
                    "duplicates": row.duplicates,
                    "not_sent": msc.not_sent(row.states),
                    "rss_start_mb": warm / 2**20,
                    "rss_end_mb": last / 2**20,
                    "rss_drift": (last - warm) / warm if warm else 0.0,
                    "redis_bytes_per_job_kept": (after - before) / count,
                    "keys": total,
                    "keys_without_ttl": len(no_ttl),
                    "examples_without_ttl": no_ttl[:3],
                }
            )
        self.figures["scaling"] = points

    # -- RabbitMQ ---------------------------------------------------------------------------------
    def amqp_round(self, relay: Relay, tag: str) -> None:
        """The batch, stream and drain scenarios with RabbitMQ as the broker (a fresh vhost per
        run, deleted after) and the bench Redis for job state, on one relay."""
        fast = tag == "fast"
        n = self.size["n"] if fast else self.size["n_slow"]
        drain_n = self.size["drain"] if fast else self.size["drain_slow"]
        stream_n = self.size["stream"] if fast else self.size["stream_slow"]

        def fleet(rep: int) -> None:
            with sc.rabbit_vhost(f"msc-{tag}-{rep}") as url:
                run = sc.MscRun(self.redis, relay, self.tmp, f"amqp-{tag}-{rep}", broker_url=url)
                try:
                    row = run.run(n, f"md-amqp-{tag}-{rep}", timebox(tag, n))
                    self.add(f"msc-amqp-{tag}", row)
                    label = f"stream-amqp-{tag}-{rep}"
                    row = singles.stream(run, self.tmp, stream_n, label, timebox(tag, stream_n))
                    self.add(f"stream-amqp-{tag}", row)
                finally:
                    run.stop()
                    sc.clean(self.redis)

        def drain(single: bool) -> Callable[[int], None]:
            kind = "single" if single else "batch"

            def run(rep: int) -> None:
                with sc.rabbit_vhost(f"drain-{kind}-{tag}-{rep}") as url:
                    key = f"drain-{kind}-amqp-{tag}"
                    self.drain(relay, tag, key, rep, drain_n, single, broker_url=url)

            return run

        self.interleaved(
            f"RabbitMQ broker, {tag} relay",
            [
                ("maildispatch (RabbitMQ)", fleet),
                ("drain: send() per job (RabbitMQ)", drain(True)),
                ("drain: send_many (RabbitMQ)", drain(False)),
            ],
        )

    # -- peers (bench/peer_cells.py) ------------------------------------------------------------
    def peer_designs(self, relay: Relay, tag: str) -> list[tuple[str, Callable[[int], None]]]:
        """(title, run) of every peer cell, or none without bench/peers.py or Django."""
        count = self.size["peers"] if tag == "fast" else self.size["peers_slow"]
        return peer_cells.designs(relay, tag, count, self.redis, self.tmp, self.add)

    # -- once ---------------------------------------------------------------------------------------
    def dkim_cost(self) -> None:
        """Microseconds to build and sign one message."""
        self.figures["dkim_us"] = sc.dkim_costs()

    def history(self) -> None:
        """bench/history.py: the history writer alone, on SQLite and PostgreSQL."""
        self.figures["history"] = history.costs(
            self.tmp / "history", self.size["history"], history.POSTGRES
        )

    def webhooks(self) -> None:
        """bench/webhooks.py: the events line delivering one endpoint's events."""
        self.figures["webhooks"] = webhooks.run(self.tmp / "webhooks", self.size["webhooks"])

    def hotstate(self) -> None:
        """bench/hotstate.py: Redis bytes per delivered job during the hot window and after."""
        count, window = self.size["hotstate"]
        self.figures["hotstate"] = hotstate.run(self.tmp / "hotstate", count, window)

    def scaleout(self) -> None:
        """bench/scaleout.py: a Redis Cluster with 1, 2 and 4 worker processes against one Redis
        with 4, RabbitMQ the broker; skipped (and said so) without RabbitMQ."""
        reason = scaleout.unavailable()
        if reason:
            print(f"   scale-out skipped: {reason}", file=sys.stderr, flush=True)
            self.figures["scaleout"] = {"skipped": reason}
            return
        count, reps, processes = self.size["scaleout"]
        self.figures["scaleout"] = scaleout.run(self.tmp / "scaleout", count, reps, processes)

    def bounces(self) -> None:
        """bench/bench_bounces.py (written alongside the bounce parser)."""
        self.figures["bounces"] = sc.bounces(self.profile != "full")


def _nopipe_relay(tmp: Path) -> Relay | None:
    """A slow relay that does not offer PIPELINING, once Relay can be told so."""
    if "pipelining" not in inspect.signature(Relay).parameters:
        return None
    off: dict[str, Any] = {"pipelining": False}
    return Relay(tmp, delay=SLOW, **off)


def run(profile: str, keep: bool, broker: str) -> tuple[Bench, int]:
    """Every part, in an order that keeps the machine's state comparable between them."""
    tmp = Path(tempfile.mkdtemp(prefix="maildispatch-bench-"))
    redis = RedisServer(tmp)
    bench = Bench(profile, tmp, redis)
    fast = Relay(tmp)
    try:
        bench.part("producer: send_many", bench.producers)
        bench.part("producer: HTTP batch intake", lambda: bench.http(fast))
        bench.relay_round(fast, "fast")
        if bench.api is not None:
            bench.api.stop()
            bench.api = None
        if broker == "amqp":
            bench.part("RabbitMQ broker, fast relay", lambda: bench.amqp_round(fast, "fast"))
        slow = Relay(tmp, delay=SLOW)
        nopipe = _nopipe_relay(tmp)
        try:
            bench.figures["pipelining"] = {
                "default": sc.offers_pipelining(slow),
                "off": sc.offers_pipelining(nopipe) if nopipe is not None else None,
            }
            bench.relay_round(slow, "slow", nopipe)
            if broker == "amqp":
                bench.part("RabbitMQ broker, slow relay", lambda: bench.amqp_round(slow, "slow"))
        finally:
            slow.stop()
            if nopipe is not None:
                nopipe.stop()
        bench.part("DKIM cost", bench.dkim_cost)
        bench.part("message history writer", bench.history)
        bench.part("webhooks: the events line", bench.webhooks)
        bench.part("hot state: Redis per delivered job", bench.hotstate)
        bench.part("scale-out: Redis Cluster, 1/2/4 worker processes", bench.scaleout)
        bench.part("bounce parsing", bench.bounces)
    finally:
        if bench.api is not None:
            bench.api.stop()
        fast.stop()
        redis.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}", file=sys.stderr)
    return bench, 1 if bench.failed else 0


def main() -> int:
    """Parse the profile, run, print the table and the figure line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="smaller runs, under 4 minutes")
    group.add_argument("--smoke", action="store_true", help="tiny runs: only proves it works")
    ap.add_argument(
        "--broker",
        choices=("redis", "amqp"),
        default="redis",
        help="amqp: also the batch, stream and drain scenarios with RabbitMQ as the broker\n"
        "(amqp://guest:guest@127.0.0.1:5672, a fresh vhost per run, via rabbitmqctl)",
    )
    ap.add_argument("--json", type=Path, help="also write every figure to this file")
    ap.add_argument("--keep", action="store_true", help="keep the logs of every process")
    args = ap.parse_args()
    profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    if not shutil.which("redis-server"):
        print("redis-server is not on PATH (apt-get install redis-server)", file=sys.stderr)
        return 2
    if args.broker == "amqp" and not shutil.which("rabbitmqctl"):
        print("--broker amqp needs rabbitmqctl on PATH (and RabbitMQ running)", file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONHASHSEED", "0")
    bench, status = run(profile, args.keep, args.broker)
    reps = bench.size["reps"]
    print(report.report(profile, reps, bench.rows, bench.figures, bench.failed), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "profile": profile,
                    "reps": reps,
                    "msc_processes": msc.MSC_PROCESSES,
                    "rows": {k: c.as_dict() for k, c in report.cells(bench.rows).items()},
                    "figures": bench.figures,
                    "failed": bench.failed,
                },
                indent=2,
                default=str,
            )
        )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
