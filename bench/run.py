"""maildispatch's bench: three designs side by side in one run, against the same relay process.

Usage: python bench/run.py [--quick | --smoke] [--json FILE]

- ceiling: raw aiosmtplib, 32 concurrent connections, messages built beforehand (bench/ceiling.py)
- naive: one Celery task per email, a new smtplib connection each (bench/naive.py)
- maildispatch: ``send_many`` (and once the HTTP batch endpoint) → the Procfile's ``msc``
  worker(s) → the relay, which counts messages by Message-ID (bench/relay.py)

with a relay that answers at once and one that waits 20 ms before every reply, DKIM off and on;
then the producer (send_many, HTTP batch intake), single-send latency on an idle fleet, Redis
bytes per queued job, worker RSS across the longest run, 1k/10k/100k scaling and bounce parsing.
Every figure is printed with its ratio to the baselines measured in this same run, so a busy
machine slows all designs alike. Timing never fails the bench: it exits non-zero only when a part
could not run at all. It starts its own redis-server and relays on free ports and stops them.
"""

from __future__ import annotations

import argparse
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

from bench import scenarios as sc
from bench.common import RedisServer, Relay, loadavg, machine
from bench.scenarios import Result

SLOW = 0.020  # seconds the slow relay waits before every reply

#: sizes per profile: emails per throughput run (fast/slow relay), naive runs, producer jobs,
#: HTTP jobs, latency sends, scaling runs
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "n": 10_000,
        "n_slow": 10_000,
        "naive": 3_000,
        "naive_slow": 300,
        "producer": 100_000,
        "http": 20_000,
        "per_request": 1000,
        "latency": 300,
        "scaling": (1_000, 10_000, 100_000),
        "rsa": True,
    },
    "quick": {
        "n": 2_000,
        "n_slow": 1_500,
        "naive": 600,
        "naive_slow": 60,
        "producer": 20_000,
        "http": 5_000,
        "per_request": 1000,
        "latency": 60,
        "scaling": (1_000, 5_000),
        "rsa": False,
    },
    "smoke": {
        "n": 200,
        "n_slow": 100,
        "naive": 60,
        "naive_slow": 10,
        "producer": 1_000,
        "http": 400,
        "per_request": 100,
        "latency": 5,
        "scaling": (100, 300),
        "rsa": False,
    },
}
TARGETS = {"vs_ceiling": 0.80, "vs_naive": 5.0, "producer": 20_000, "http": 5_000}


class Bench:
    """Runs the parts in order, keeps what they measured, survives a part that fails."""

    def __init__(self, profile: str, tmp: Path) -> None:
        self.size = PROFILES[profile]
        self.profile = profile
        self.tmp = tmp
        self.rows: dict[str, Result] = {}
        self.figures: dict[str, Any] = {}
        self.failed: list[str] = []

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
        """Keep a row; say so when something arrived twice or not at all."""
        self.rows[key] = row
        if row.duplicates:
            row.note += f"; {row.duplicates} DUPLICATES"
        if not row.complete and "time-boxed" not in row.note:
            row.note += f"; only {row.delivered} of {row.count} arrived"

    # -- the parts ---------------------------------------------------------------------------
    def producers(self, redis: RedisServer) -> None:
        """send_many of the producer count with no worker; Redis bytes per queued job."""
        self.figures["producer"] = sc.producer(redis, self.tmp, self.size["producer"])

    def http(self, redis: RedisServer, relay: Relay) -> sc.Api | None:
        """The HTTP batch intake, when producers/http.py exists."""
        if not (Path(sc.REPO) / "producers" / "http.py").exists():
            self.figures["http"] = None
            return None
        env = sc.msc.worker_env(redis.url, relay.url, self.tmp)
        api = sc.Api(env, self.tmp)
        self.figures["http"] = sc.http_intake(
            api, redis, self.size["http"], self.size["per_request"]
        )
        return api

    def relay_round(self, redis: RedisServer, relay: Relay, tag: str, api: sc.Api | None) -> None:
        """Ceiling, maildispatch (plain, DKIM), naive, ceiling again, on one relay."""
        n = self.size["n"] if tag == "fast" else self.size["n_slow"]
        timeout = 600.0 if tag == "fast" else 900.0
        keys = sc.write_dkim_keys(self.tmp)
        first = sc.ceiling(relay, n, f"ceiling-{tag}-1")
        run = sc.MscRun(redis, relay, self.tmp, f"{tag}-plain")
        try:
            self.add(f"msc-{tag}", run.run(n, f"md-{tag}", timeout, sample_rss=True))
            if tag == "fast":
                if api is not None:
                    self.part(
                        "maildispatch via HTTP batch",
                        lambda: self.add(
                            "msc-http",
                            sc.http_delivery(api, run, n, self.size["per_request"], timeout),
                        ),
                    )
                self.part("latency", lambda: self._latency(run))
                self.part("scaling", lambda: self._scaling(run, redis))
        finally:
            run.stop()
        run = sc.MscRun(redis, relay, self.tmp, f"{tag}-dkim", dkim=keys["ed25519"])
        try:
            self.add(f"msc-{tag}-dkim", run.run(n, f"md-{tag}-dkim", timeout))
        finally:
            run.stop()
        if tag == "fast" and self.size["rsa"]:
            run = sc.MscRun(redis, relay, self.tmp, f"{tag}-rsa", dkim=keys["rsa"])
            try:
                self.add(f"msc-{tag}-rsa", run.run(n, f"md-{tag}-rsa", timeout))
            finally:
                run.stop()
        naive_n = self.size["naive"] if tag == "fast" else self.size["naive_slow"]
        naive_timeout = 300.0 if tag == "fast" else max(10.0, naive_n / 8)
        self.add(
            f"naive-{tag}",
            sc.naive(redis, relay, self.tmp, naive_n, naive_timeout, f"naive-{tag}"),
        )
        second = sc.ceiling(relay, n, f"ceiling-{tag}-2")
        ceiling = Result(
            name=f"ceiling-{tag}",
            count=first.count + second.count,
            delivered=first.delivered + second.delivered,
            seconds=first.seconds + second.seconds,
            duplicates=first.duplicates + second.duplicates,
            cpu_us={k: round((first.cpu_us[k] + second.cpu_us[k]) / 2, 1) for k in first.cpu_us},
            note=f"{first.rate:,.0f} before, {second.rate:,.0f} after",
        )
        self.add(f"ceiling-{tag}", ceiling)

    def _latency(self, run: sc.MscRun) -> None:
        time.sleep(1.0)  # let the fleet settle: idle means idle
        self.figures["latency"] = sc.latency(run, self.size["latency"])

    def _scaling(self, run: sc.MscRun, redis: RedisServer) -> None:
        points = []
        for count in self.size["scaling"]:
            before = redis.used_memory()
            row = run.run(count, f"scale-{count}", 1800, sample_rss=True)
            after = redis.used_memory()
            rss = row.extra["rss"]
            # drift: from the first sample past 10% of the run (pools and caches warm) to the end
            warm = next((r for d, r in rss if d >= count * 0.1), rss[0][1] if rss else 0)
            last = rss[-1][1] if rss else 0
            total, no_ttl = sc.keys_without_ttl(redis)
            points.append(
                {
                    "count": count,
                    "rate": row.rate,
                    "complete": row.complete,
                    "duplicates": row.duplicates,
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

    def dkim_cost(self) -> None:
        """Microseconds to build and sign one message."""
        self.figures["dkim_us"] = sc.dkim_costs()

    def bounces(self) -> None:
        """bench/bench_bounces.py (written alongside the bounce parser)."""
        self.figures["bounces"] = sc.bounces(self.profile != "full")


def run(profile: str, keep: bool) -> tuple[Bench, int]:
    """Every part, in an order that keeps the machine's state comparable between them."""
    tmp = Path(tempfile.mkdtemp(prefix="maildispatch-bench-"))
    bench = Bench(profile, tmp)
    redis = RedisServer(tmp)
    fast = Relay(tmp)
    api: sc.Api | None = None
    try:
        bench.part("producer: send_many", lambda: bench.producers(redis))

        def http() -> None:
            nonlocal api
            api = bench.http(redis, fast)

        bench.part("producer: HTTP batch intake", http)
        bench.part("fast relay", lambda: bench.relay_round(redis, fast, "fast", api))
        if api is not None:
            api.stop()
            api = None
        slow = Relay(tmp, delay=SLOW)
        try:
            bench.part("slow relay (20 ms)", lambda: bench.relay_round(redis, slow, "slow", None))
        finally:
            slow.stop()
        bench.part("DKIM cost", bench.dkim_cost)
        bench.part("bounce parsing", bench.bounces)
    finally:
        if api is not None:
            api.stop()
        fast.stop()
        redis.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}", file=sys.stderr)
    return bench, 1 if bench.failed else 0


# -- the report ------------------------------------------------------------------------------------
def _ratio(a: Result | None, b: Result | None) -> float | None:
    if a is None or b is None or not b.rate:
        return None
    return a.rate / b.rate


def _fmt(x: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def report(bench: Bench) -> str:
    """The table, then one line of figures with their ratios."""
    rows, fig = bench.rows, bench.figures
    out = [
        f"maildispatch bench ({bench.profile}) on {machine()}; load average {loadavg()}",
        "",
        f"{'design':<34}{'emails':>8}{'per s':>9}{'x ceil':>8}{'x naive':>8}  cpu µs/email",
    ]
    for tag, title in (("fast", "relay answers at once"), ("slow", "relay waits 20 ms per reply")):
        out.append(f"-- {title}")
        ceiling, naive = rows.get(f"ceiling-{tag}"), rows.get(f"naive-{tag}")
        names = [
            (f"ceiling-{tag}", "ceiling (aiosmtplib, 32 conns)"),
            (f"naive-{tag}", "naive (task per email)"),
            (f"msc-{tag}", "maildispatch"),
            (f"msc-{tag}-dkim", "maildispatch + DKIM ed25519"),
            (f"msc-{tag}-rsa", "maildispatch + DKIM rsa-2048"),
            ("msc-http" if tag == "fast" else "", "maildispatch via HTTP batch"),
        ]
        for key, title2 in names:
            row = rows.get(key)
            if row is None:
                continue
            cpu = " ".join(f"{k} {v:,.0f}" for k, v in row.cpu_us.items())
            out.append(
                f"{title2:<34}{row.delivered:>8}{row.rate:>9,.0f}"
                f"{_fmt(_ratio(row, ceiling), '.2f'):>8}{_fmt(_ratio(row, naive), '.1f'):>8}"
                f"  {cpu}{'  (' + row.note.strip('; ') + ')' if row.note else ''}"
            )
    p, h, lat = fig.get("producer"), fig.get("http"), fig.get("latency")
    out.append("-- producers, latency, memory")
    if p:
        out.append(
            f"send_many of {p['count']:,} jobs: {p['jobs_per_s']:,.0f} jobs/s "
            f"(target {TARGETS['producer']:,}); Redis {p['redis_bytes_per_job']:,.0f} bytes per "
            f"queued job (target ≤ 4096), {p['messages_queued']} task messages"
        )
    if h:
        out.append(
            f"HTTP POST /v1/messages:batch, {h['count']:,} jobs: {h['jobs_per_s']:,.0f} jobs/s "
            f"(target {TARGETS['http']:,})"
        )
    if lat:
        out.append(
            f"single send on an idle fleet, enqueue → 250 ({lat['sends']} sends): p50 "
            f"{lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms "
            "(targets 15 / 50)"
        )
    for point in fig.get("scaling", []):
        out.append(
            f"scaling {point['count']:>7,}: {point['rate']:>6,.0f}/s, worker RSS "
            f"{point['rss_start_mb']:.0f} → {point['rss_end_mb']:.0f} MB "
            f"({point['rss_drift']:+.1%}), Redis keeps {point['redis_bytes_per_job_kept']:,.0f} "
            f"bytes/job until the job TTL; md:* keys without TTL: {point['keys_without_ttl']}"
            + (f" {point['examples_without_ttl']}" if point["keys_without_ttl"] else "")
        )
    if fig.get("dkim_us"):
        d = fig["dkim_us"]
        out.append(
            f"build one message: {d['none']:.0f} µs; + DKIM ed25519 {d['ed25519'] - d['none']:.0f}"
            f" µs; + DKIM rsa-2048 {d['rsa2048'] - d['none']:.0f} µs"
        )
    b = fig.get("bounces")
    if b:
        out.append(f"bounce parsing: {b.get('msgs/s', 0):,.0f} msgs/s on one core (target 1,000)")
    if bench.failed:
        out.append(f"FAILED parts: {', '.join(bench.failed)}")
    out.append("")
    out.append(figure_line(bench))
    return "\n".join(out)


def figure_line(bench: Bench) -> str:
    """The last line: every figure with its ratio, machine-greppable."""
    rows, fig = bench.rows, bench.figures
    parts = []
    for tag in ("fast", "slow"):
        c, n = rows.get(f"ceiling-{tag}"), rows.get(f"naive-{tag}")
        m, k = rows.get(f"msc-{tag}"), rows.get(f"msc-{tag}-dkim")
        parts.append(
            f"{tag}: ceiling={_fmt(c.rate if c else None)}/s naive={_fmt(n.rate if n else None)}/s"
            f" msc={_fmt(m.rate if m else None)}/s ({_fmt(_ratio(m, c), '.2f')}x ceiling,"
            f" {_fmt(_ratio(m, n), '.1f')}x naive)"
            f" msc+dkim={_fmt(k.rate if k else None)}/s ({_fmt(_ratio(k, c), '.2f')}x ceiling,"
            f" {_fmt(_ratio(k, n), '.1f')}x naive)"
        )
    p, h, lat = fig.get("producer"), fig.get("http"), fig.get("latency")
    parts.append(f"send_many={_fmt(p['jobs_per_s'] if p else None)} jobs/s")
    parts.append(f"http={_fmt(h['jobs_per_s'] if h else None)} jobs/s")
    parts.append(
        f"latency p50={_fmt(lat['p50_ms'] if lat else None, '.1f')}ms"
        f" p99={_fmt(lat['p99_ms'] if lat else None, '.1f')}ms"
    )
    parts.append(f"redis={_fmt(p['redis_bytes_per_job'] if p else None)} B/job")
    scaling = fig.get("scaling") or []
    if scaling:
        parts.append(f"rss_drift={scaling[-1]['rss_drift']:+.1%}")
        parts.append("scaling=" + "/".join(f"{s['rate']:.0f}" for s in scaling) + "/s")
    b = fig.get("bounces")
    parts.append(f"bounces={_fmt(b.get('msgs/s') if b else None)} msgs/s")
    parts.append(f"load={loadavg()}")
    return "figures: " + "; ".join(parts)


def main() -> int:
    """Parse the profile, run, print the table and the figure line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="smaller runs, under 2 minutes")
    group.add_argument("--smoke", action="store_true", help="tiny runs: only proves it works")
    ap.add_argument("--json", type=Path, help="also write every figure to this file")
    ap.add_argument("--keep", action="store_true", help="keep the logs of every process")
    args = ap.parse_args()
    profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    if not shutil.which("redis-server"):
        print("redis-server is not on PATH (apt-get install redis-server)", file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONHASHSEED", "0")
    bench, status = run(profile, args.keep)
    print(report(bench), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "profile": profile,
                    "rows": {
                        k: {
                            "count": r.count,
                            "delivered": r.delivered,
                            "per_s": r.rate,
                            "seconds": r.seconds,
                            "duplicates": r.duplicates,
                            "cpu_us": r.cpu_us,
                            "note": r.note,
                        }
                        for k, r in bench.rows.items()
                    },
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
