"""Scaling out: job state on a Redis Cluster, RabbitMQ the broker, 1, 2 and 4 worker processes.

Usage: python -m bench.scaleout [--count N] [--reps R]

Issue 18 (point 5): a fleet that grows by adding nodes, shown on this machine. The designs (the
profile of bench/profiles.py chooses the process counts), each run ``reps`` times, interleaved
(A B C D A B C D ...), median and spread (min-max):

- cluster, 1 / 2 / 4 worker processes: a 3-master Redis Cluster on loopback, one replica per
  master, as production runs it (AOF fsynced every second, ``hash-max-listpack-value 256``),
  started by tests/support/redis_cluster.py; a write before an ack waits for its replica (``WAIT``,
  ``MAILDISPATCH_REDIS_WAIT_REPLICAS`` left at its default of 1);
- 1 Redis, 4 worker processes, the baseline: one redis-server (bench.common.RedisServer, the same
  AOF and listpack settings).

RabbitMQ (127.0.0.1:5672, guest) is the broker of every design (kombu has no cluster transport),
a fresh vhost per run. The Procfile's ``msc`` line is started as a user would, with
``MAILDISPATCH_MSC_PROCESSES`` set (its first process runs the embedded scheduler), and a relay
that answers at once. Each run: 300 jobs to warm up, then ``count`` jobs by ``send_many`` and
``count // 2`` by ``send`` from 4 producer processes (bench/singles.py's stream). Every job's
final state is read back: all ``sent``, each counted once at the relay.

Per run: emails/s; CPU µs per email of the worker processes, of every Redis node summed (masters
and replicas: replication is part of the price) and of each master (how evenly the shards spread),
and of RabbitMQ (every ``beam.smp`` process: shared with anything else using the machine's
RabbitMQ). Redis and RabbitMQ CPU are read over the ``send_many`` run only (the stream's window
holds its producers' start). The check: the cluster with 4 worker processes no slower than one
Redis with 4. On a machine with fewer cores than processes, the cluster's six nodes share the
cores with the workers: they add processes, not cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import msc, singles
from bench import scenarios as sc
from bench.common import RedisServer, Relay, cpu_seconds
from bench.profiles import timebox

if TYPE_CHECKING:
    from tests.support.redis_cluster import RedisCluster

#: worker processes of the cluster designs; the largest also runs on 1 Redis, the baseline
PROCESSES: tuple[int, ...] = (1, 2, 4)


def designs(processes: tuple[int, ...] = PROCESSES) -> list[tuple[str, int]]:
    """(state store, worker processes) of each design, in the order they run."""
    return [("cluster", n) for n in processes] + [("single", max(processes))]


#: jobs each run delivers first, so that every worker process has its connections open
WARM = 300
RABBIT = ("127.0.0.1", 5672)


def key(store: str, processes: int) -> str:
    """``cluster-4``, ``single-4``."""
    return f"{store}-{processes}"


def unavailable() -> str:
    """Why this cannot run here (``""``: it can)."""
    for tool in ("redis-server", "redis-cli", "rabbitmqctl"):
        if not shutil.which(tool):
            return f"{tool} is not on PATH"
    try:
        with socket.create_connection(RABBIT, timeout=1):
            pass
    except OSError:
        return f"RabbitMQ is not reachable on {RABBIT[0]}:{RABBIT[1]}"
    return ""


@dataclass
class Store:
    """Where job state lives in a design: its URL, its processes, how to empty it."""

    url: str
    #: node name ("master 7001", "replica 7004", "redis") -> pid
    pids: dict[str, int]
    clean: Callable[[], None]

    def cpu(self) -> dict[str, float]:
        """CPU seconds of every node so far."""
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}


def cluster_store(cluster: RedisCluster) -> Store:
    """A started cluster (tests/support/redis_cluster.py) as a Store."""
    pids = {}
    for node in cluster.nodes:
        assert node.proc is not None
        pids[f"{node.role} {node.port}"] = node.proc.pid

    def clean() -> None:
        for node in cluster.nodes:
            if node.role == "master":  # the replicas follow
                node.call("FLUSHALL")

    return Store(cluster.url, pids, clean)


def single_store(redis: RedisServer) -> Store:
    """The bench's private redis-server as a Store."""
    return Store(redis.url, {"redis": redis.proc.pid}, lambda: sc.clean(redis))


class Line:
    """The ``msc`` line with ``processes`` worker processes on ``store``, RabbitMQ the broker, and a
    producer; what bench/singles.py's ``stream`` reads of an MscRun (relay, env, fleet,
    dispatcher)."""

    def __init__(
        self, store: Store, relay: Relay, tmp: Path, tag: str, broker_url: str, processes: int
    ) -> None:
        from producers.client import Dispatcher

        self.relay = relay
        self.env = msc.worker_env(store.url, relay.url, tmp, None, broker_url) | {
            "MAILDISPATCH_MSC_PROCESSES": str(processes)
        }
        self.fleet = msc.Fleet(self.env, tmp, tag)
        try:
            self.fleet.wait_ready()
            self.dispatcher = Dispatcher(msc.settings_from(self.env))
            msc.deliver(self.dispatcher, relay, msc.jobs(WARM, f"warm-{tag}"), 60)
        except BaseException:
            self.fleet.stop()
            raise

    def stop(self) -> None:
        """Stop the line and close the producer."""
        self.fleet.stop()
        self.dispatcher.close()


def rabbit_pids() -> list[int]:
    """RabbitMQ's Erlang VM processes."""
    out = subprocess.run(["pgrep", "-x", "beam.smp"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _us(before: float, after: float, n: int) -> float:
    return round((after - before) / max(n, 1) * 1e6, 1)


def _batch(line: Line, store: Store, count: int, label: str) -> dict[str, Any]:
    """``count`` jobs by send_many: emails/s, CPU per email, final states."""
    rabbit = rabbit_pids()
    items = msc.jobs(count, label)
    line.relay.reset()
    redis0, worker0 = store.cpu(), line.fleet.cpu()
    rabbit0, producer0 = sum(map(cpu_seconds, rabbit)), time.process_time()
    out = msc.deliver(line.dispatcher, line.relay, items, timebox("fast", count), reset=False)
    producer = time.process_time() - producer0
    redis1, worker1 = store.cpu(), line.fleet.cpu()
    rabbit1 = sum(map(cpu_seconds, rabbit))
    nodes = {name: _us(redis0[name], redis1[name], count) for name in redis0}
    return {
        "workers": line.fleet.workers(),
        "count": count,
        "delivered": out["delivered"],
        "duplicates": out["duplicates"],
        "states": msc.wait_final(line.dispatcher, out["ids"]),
        "rate": out["delivered"] / out["seconds"],
        "cpu_us": {
            "worker": _us(worker0, worker1, count),
            "redis": round(sum(nodes.values()), 1),
            "rabbitmq": _us(rabbit0, rabbit1, count),
            "producer": round(producer / count * 1e6, 1),
        },
        "nodes_us": nodes,
    }


def one(
    store: Store, relay: Relay, tmp: Path, processes: int, count: int, label: str
) -> dict[str, Any]:
    """One run of one design, a fresh vhost: send_many, then send() from 4 producers."""
    n = max(count // 2, 1)
    try:
        with sc.rabbit_vhost(label) as broker:
            line = Line(store, relay, tmp, label, broker, processes)
            try:
                batch = _batch(line, store, count, label)
                # singles.stream reads only the relay, env, fleet and dispatcher of its MscRun
                run = cast(sc.MscRun, line)
                stream = singles.stream(run, tmp, n, f"{label}-send", timebox("fast", n))
            finally:
                line.stop()
    finally:
        store.clean()
    return batch | {
        "processes": processes,
        "send": {
            "count": stream.count,
            "delivered": stream.delivered,
            "duplicates": stream.duplicates,
            "states": stream.states,
            "rate": stream.rate,
            "worker_us": stream.cpu_us["worker"],
        },
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _problems(run: dict[str, Any]) -> list[str]:
    """What went wrong with a run's jobs, loudly ([]: every job sent, once)."""
    out = []
    for what, part in (("send_many", run), ("send()", run["send"])):
        if part["delivered"] < part["count"]:
            out.append(f"!! {what}: {part['count'] - part['delivered']} missing at the relay")
        if part["duplicates"]:
            out.append(f"!! {what}: {part['duplicates']} DUPLICATES")
        if msc.not_sent(part["states"]):
            out.append(f"{what}: {msc.not_sent(part['states'])}")
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread of one design's runs."""
    nodes = runs[0]["nodes_us"]
    return {
        "processes": runs[0]["processes"],
        "workers": min(r["workers"] for r in runs),
        "rate": _spread([r["rate"] for r in runs]),
        "send_rate": _spread([r["send"]["rate"] for r in runs]),
        "cpu_us": {k: statistics.median(r["cpu_us"][k] for r in runs) for k in runs[0]["cpu_us"]},
        "send_worker_us": statistics.median(r["send"]["worker_us"] for r in runs),
        "masters_us": {
            n: statistics.median(r["nodes_us"][n] for r in runs)
            for n in nodes
            if n.startswith("master")
        },
        "replicas_us": statistics.median(
            sum(us for n, us in r["nodes_us"].items() if n.startswith("replica")) for r in runs
        ),
        "problems": [f"run {i}, {p}" for i, r in enumerate(runs, 1) for p in _problems(r)],
    }


def run(tmp: Path, count: int, reps: int, processes: tuple[int, ...] = PROCESSES) -> dict[str, Any]:
    """Every design ``reps`` times, interleaved: the figures."""
    from tests.support.redis_cluster import RedisCluster

    tmp.mkdir(parents=True, exist_ok=True)
    relay = Relay(tmp)
    cluster = RedisCluster(masters=3, replicas=1, extra={"hash-max-listpack-value": "256"})
    redis: RedisServer | None = None
    order = designs(processes)
    runs: dict[str, list[dict[str, Any]]] = {key(*d): [] for d in order}
    try:
        cluster.start()
        redis = RedisServer(tmp)
        stores = {"cluster": cluster_store(cluster), "single": single_store(redis)}
        for rep in range(reps):
            for store, n in order:
                name = key(store, n)
                print(f"   scale-out: {name}, run {rep + 1}/{reps}", file=sys.stderr, flush=True)
                label = f"scaleout-{name}-{rep}"
                runs[name].append(one(stores[store], relay, tmp, n, count, label))
    finally:
        cluster.stop()
        if redis is not None:
            redis.stop()
        relay.stop()
    found = {name: summary(r) for name, r in runs.items()}

    def ratio(a: str, b: str, figure: str = "rate") -> float:
        return float(found[a][figure]["median"] / max(found[b][figure]["median"], 1e-9))

    most, least = max(processes), min(processes)
    return {
        "count": count,
        "send_count": max(count // 2, 1),
        "reps": reps,
        "cores": os.cpu_count() or 1,
        "most": most,
        "designs": found,
        "runs": runs,
        "cluster_single": ratio(f"cluster-{most}", f"single-{most}"),
        "cluster_single_send": ratio(f"cluster-{most}", f"single-{most}", "send_rate"),
        "scaling": {n: ratio(f"cluster-{n}", f"cluster-{least}") for n in processes if n != least},
    }


def _title(name: str, processes: int) -> str:
    where = "cluster" if name.startswith("cluster") else "1 Redis"
    return f"{where}, {msc.processes(processes)}:"


def _rate(m: dict[str, float]) -> str:
    """``1,234/s (1,200-1,260)``; the median alone when the runs agree (or there is one)."""
    spread = "" if m["min"] == m["max"] else f" ({m['min']:,.0f}-{m['max']:,.0f})"
    return f"{m['median']:,.0f}/s{spread}"


def _verdict(f: dict[str, Any]) -> str:
    """The check: cluster-4 no slower than single-4 (by the medians, else by the spreads)."""
    most = f["most"]
    c4, s4 = f["designs"][f"cluster-{most}"]["rate"], f["designs"][f"single-{most}"]["rate"]
    if c4["median"] >= s4["median"]:
        return "met (no slower than 1 Redis)"
    if c4["max"] >= s4["min"]:
        return "not met by the medians; the spreads overlap"
    return "NOT met: slower than 1 Redis in every run"


def line(f: dict[str, Any]) -> str:
    """The report's lines: one per design, then the check."""
    if f.get("skipped"):
        return f"scale-out (Redis Cluster, 1/2/4 worker processes): skipped ({f['skipped']})"
    runs = f"{f['reps']} run" + ("" if f["reps"] == 1 else "s")
    out = [
        f"scale-out: job state on a Redis Cluster (3 masters, 1 replica each, AOF everysec) or on "
        f"1 Redis, RabbitMQ the broker; {f['count']:,} jobs by send_many, {f['send_count']:,} by "
        f"send() from 4 producers; median (min-max) of {runs}, {f['cores']} cores; CPU µs per "
        "email (send_many)"
    ]
    for name, d in f["designs"].items():
        rate, cpu = d["rate"], d["cpu_us"]
        masters = "/".join(f"{us:,.0f}" for us in d["masters_us"].values())
        redis = f"Redis {cpu['redis']:,.0f}" + (
            f" (masters {masters}, replicas {d['replicas_us']:,.0f})" if masters else ""
        )
        out.append(
            f"  {_title(name, d['processes']):<29} {_rate(rate)}, send() {_rate(d['send_rate'])}; "
            f"workers {cpu['worker']:,.0f}, {redis}, RabbitMQ {cpu['rabbitmq']:,.0f}"
            + (f" [{msc.processes(d['workers'])} seen]" if d["workers"] != d["processes"] else "")
            + "".join(f"; {p}" for p in d["problems"])
        )
    most = f["most"]
    scaling = ", ".join(f"{n}/1 = {r:.2f}" for n, r in f["scaling"].items())
    out.append(
        f"  check: cluster-{most} / single-{most} = {f['cluster_single']:.2f} (send_many), "
        f"{f['cluster_single_send']:.2f} (send()): {_verdict(f)}"
        + (f"; cluster {scaling}" if scaling else "")
    )
    return "\n".join(out)


def main() -> int:
    """Run it alone."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    reason = unavailable()
    if reason:
        print(f"scale-out cannot run: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="maildispatch-scaleout-") as tmp:
        print(line(run(Path(tmp), args.count, args.reps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
