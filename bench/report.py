"""The bench's report: each design's runs summed up as a median and a spread, the table, the
last line of figures, and the JSON form of it all."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import loadavg, machine
from bench.msc import MSC_PROCESSES, not_sent
from bench.scenarios import Result

#: targets of issue 7 and issue 13 (ratios against the single-process ceiling)
TARGETS: dict[str, float] = {
    "vs_ceiling": 0.85,
    "vs_naive": 5.0,
    "producer": 20_000,
    "http": 5_000,
    "single_batch": 0.8,
    "paced_p50_ms": 100,
    "paced_p99_ms": 300,
    "backlog_p99_ms": 1000,
}


@dataclass
class Cell:
    """Every run of one design: the median and the spread of its rate."""

    runs: list[Result]

    @property
    def rate(self) -> float:
        """The median rate."""
        return statistics.median(r.rate for r in self.runs)

    @property
    def lo(self) -> float:
        """The slowest run's rate."""
        return min(r.rate for r in self.runs)

    @property
    def hi(self) -> float:
        """The fastest run's rate."""
        return max(r.rate for r in self.runs)

    @property
    def cpu_us(self) -> dict[str, float]:
        """The median CPU per email of each process kind."""
        names = dict.fromkeys(k for r in self.runs for k in r.cpu_us)
        return {
            k: statistics.median(r.cpu_us[k] for r in self.runs if k in r.cpu_us) for k in names
        }

    @property
    def loud(self) -> list[str]:
        """What must not pass unseen: duplicates, shortfalls, jobs not sent, per run."""
        out = []
        for n, r in enumerate(self.runs, 1):
            which = f"run {n}: " if len(self.runs) > 1 else ""
            if r.duplicates:
                out.append(f"!! {which}{r.duplicates} DUPLICATES at the relay")
            if r.delivered < r.count:
                out.append(f"!! {which}only {r.delivered} of {r.count} arrived")
            if r.states and not_sent(r.states):
                out.append(which + not_sent(r.states))
        return out

    @property
    def note(self) -> str:
        """The loud notes, then the note of the median run."""
        middle = sorted(self.runs, key=lambda r: r.rate)[len(self.runs) // 2]
        return "; ".join([*self.loud, *([middle.note] if middle.note else [])])

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: the median (``per_s``), the spread and every run."""
        return {
            "count": self.runs[0].count,
            "delivered": sum(r.delivered for r in self.runs),
            "per_s": self.rate,
            "min_per_s": self.lo,
            "max_per_s": self.hi,
            "runs_n": len(self.runs),
            "seconds": statistics.median(r.seconds for r in self.runs),
            "duplicates": sum(r.duplicates for r in self.runs),
            "cpu_us": self.cpu_us,
            "note": self.note,
            "runs": [
                {
                    "count": r.count,
                    "delivered": r.delivered,
                    "per_s": r.rate,
                    "seconds": r.seconds,
                    "duplicates": r.duplicates,
                    "cpu_us": r.cpu_us,
                    "states": r.states,
                    "note": r.note,
                }
                for r in self.runs
            ],
        }


def cells(rows: dict[str, list[Result]]) -> dict[str, Cell]:
    """One cell per design that ran at least once."""
    return {k: Cell(v) for k, v in rows.items() if v}


def ratio(a: Cell | None, b: Cell | None) -> float | None:
    """a's median over b's, when both ran."""
    if a is None or b is None or not b.rate:
        return None
    return a.rate / b.rate


def fmt(x: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    """A figure, or n/a."""
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def _median_of(points: Sequence[dict[str, Any]], key: str) -> tuple[float, float, float] | None:
    values = [p[key] for p in points if p.get(key) is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def _spread(m: tuple[float, float, float] | None, spec: str = ".0f") -> str:
    if m is None:
        return "n/a"
    if m[1] == m[2]:
        return f"{m[0]:{spec}}"
    return f"{m[0]:{spec}} ({m[1]:{spec}}-{m[2]:{spec}})"


# -- the table --------------------------------------------------------------------------------------
def _rows_of(tag: str) -> list[tuple[str, str, str]]:
    """(row key, title, what its x-batch column compares with) for one relay."""
    return [
        (f"ceiling-{tag}", "ceiling, 1 process x 32 conns", ""),
        (f"ceilingN-{tag}", f"ceiling, {MSC_PROCESSES} processes x 32 conns", ""),
        (f"naive-{tag}", "naive (task per email)", ""),
        (f"msc-{tag}", "maildispatch (send_many)", ""),
        (f"msc-{tag}-dkim", "maildispatch + DKIM ed25519", ""),
        (f"msc-{tag}-rsa", "maildispatch + DKIM rsa-2048", ""),
        (f"msc-{tag}-nopipe", "maildispatch, relay w/o PIPELINING", ""),
        ("msc-http" if tag == "fast" else "", "maildispatch via HTTP batch", ""),
        (f"stream-{tag}", "send() x4 producers, all out", f"msc-{tag}"),
        (f"drain-single-{tag}", "drain: send() per job", f"drain-batch-{tag}"),
        (f"drain-batch-{tag}", "drain: one send_many", ""),
        (f"drain-batch-nohist-{tag}", "drain: send_many, history off", f"drain-batch-{tag}"),
        (f"msc-amqp-{tag}", "maildispatch, RabbitMQ broker", ""),
        (f"stream-amqp-{tag}", "RabbitMQ: send() x4 producers", f"msc-amqp-{tag}"),
        (f"drain-single-amqp-{tag}", "RabbitMQ drain: send() per job", f"drain-batch-amqp-{tag}"),
        (f"drain-batch-amqp-{tag}", "RabbitMQ drain: one send_many", ""),
    ]


def table(profile: str, reps: int, rows: dict[str, list[Result]], fig: dict[str, Any]) -> str:
    """The table: one line per design and relay, medians with their spread."""
    c = cells(rows)
    out = [
        f"maildispatch bench ({profile}) on {machine()}; load average {loadavg()}",
        f"each design run {reps}x interleaved; per s = median (min-max); ratios of medians; "
        "x ceil1 = x the 1-process ceiling (the targets' baseline), x ceilN = x the "
        f"{MSC_PROCESSES}-process one, x ref = x the row named in the note",
        "",
        f"{'design':<38}{'emails':>7}{'per s':>8} {'(min-max)':<15}{'x ceil1':>8}{'x ceilN':>8}"
        f"{'x naive':>8}{'x ref':>7}  cpu µs/email",
    ]
    for tag, title in (("fast", "relay answers at once"), ("slow", "relay waits 20 ms per reply")):
        out.append(f"-- {title}")
        ceil1, ceil_n, naive = (
            c.get(f"ceiling-{tag}"),
            c.get(f"ceilingN-{tag}"),
            c.get(f"naive-{tag}"),
        )
        titles = {key: name for key, name, _ in _rows_of(tag)}
        for key, name, ref in [*_rows_of(tag), *_peer_rows(c, tag)]:
            cell = c.get(key)
            if cell is None:
                continue
            cpu = " ".join(f"{k} {v:,.0f}" for k, v in cell.cpu_us.items())
            spread = f"({cell.lo:,.0f}-{cell.hi:,.0f})" if len(cell.runs) > 1 else ""
            refcell = c.get(ref) if ref else None
            note = "; ".join(x for x in (cell.note, refcell and f"x ref: ÷ {titles[ref]}") if x)
            out.append(
                f"{name:<38}{cell.runs[0].count:>7}{cell.rate:>8,.0f} {spread:<15}"
                f"{fmt(ratio(cell, ceil1), '.2f'):>8}{fmt(ratio(cell, ceil_n), '.2f'):>8}"
                f"{fmt(ratio(cell, naive), '.1f'):>8}"
                f"{fmt(ratio(cell, refcell), '.2f') if refcell else '':>7}"
                f"  {cpu}{'  (' + note + ')' if note else ''}"
            )
        if c.get(f"drain-single-{tag}") or c.get(f"drain-batch-{tag}"):
            out.append(
                "   drains: the jobs enqueued while the msc line is stopped, then the line started "
                "once; per s = delivered ÷ (first 250 → last 250) at the relay. Other rows: "
                "first enqueue (first connection) → last 250"
            )
        msc = c.get(f"msc-{tag}")
        out.append(
            f"   targets: maildispatch {fmt(ratio(msc, ceil1), '.2f')}x ceil1 (≥ "
            f"{TARGETS['vs_ceiling']})"
            + (
                f", {fmt(ratio(msc, naive), '.1f')}x naive (≥ {TARGETS['vs_naive']:.0f})"
                if tag == "fast"
                else ""
            )
            + f"; drains single/batch "
            f"{fmt(ratio(c.get(f'drain-single-{tag}'), c.get(f'drain-batch-{tag}')), '.2f')} "
            f"(≥ {TARGETS['single_batch']})"
        )
        paced = fig.get(f"paced-{tag}") or []
        if paced:
            p = paced[0]
            out.append(
                f"paced {p['rate']:.0f}/s from {p['producers']} producers, send() each, "
                f"{p['sends']} per run: enqueue → 250 p50 {_spread(_median_of(paced, 'p50_ms'), '.1f')}"
                f" ms, p99 {_spread(_median_of(paced, 'p99_ms'), '.1f')} ms "
                f"(targets {TARGETS['paced_p50_ms']:.0f} / {TARGETS['paced_p99_ms']:.0f})"
                + "".join(
                    f"; run {n}: {not_sent(q['states'])}"
                    for n, q in enumerate(paced, 1)
                    if not_sent(q["states"])
                )
            )
    return "\n".join(out)


def _peer_rows(c: dict[str, Cell], tag: str) -> list[tuple[str, str, str]]:
    """Rows of the peer baselines (bench/peers.py), when they ran."""
    suffix = f"-{tag}"
    return [
        (key, c[key].runs[0].name[:37], "")
        for key in c
        if key.startswith("peer-") and key.endswith(suffix)
    ]


def others(fig: dict[str, Any], failed: list[str]) -> list[str]:
    """The producer, latency, memory, bounce and DKIM lines."""
    out = ["-- producers, latency, memory"]
    p, h, lat, b = fig.get("producer"), fig.get("http"), fig.get("latency"), fig.get("backlog")
    if p:
        out.append(
            f"send_many of {p['count']:,} jobs: {p['jobs_per_s']:,.0f} jobs/s "
            f"(target {TARGETS['producer']:,.0f}); Redis {p['redis_bytes_per_job']:,.0f} bytes per "
            f"queued job (target ≤ 4096), {p['messages_queued']} task messages"
        )
    if h:
        out.append(
            f"HTTP POST /v1/messages:batch, {h['count']:,} jobs: {h['jobs_per_s']:,.0f} jobs/s "
            f"(target {TARGETS['http']:,.0f})"
        )
    if lat:
        out.append(
            f"single send on an idle fleet, enqueue → 250 ({lat['sends']} sends): p50 "
            f"{lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms "
            "(targets 15 / 50)"
        )
    if b:
        out.append(
            f"single send every 100 ms while a send_many of {b['backlog']:,} drains "
            f"({b['drain_per_s']:,.0f}/s): enqueue → 250 ({b['singles']} sends) p50 "
            f"{b['p50_ms']:.0f} ms, p99 {b['p99_ms']:.0f} ms, max {b['max_ms']:.0f} ms "
            f"(target p99 ≤ {TARGETS['backlog_p99_ms']:.0f})"
            + "".join(
                f"; {what}: {not_sent(b[k])}"
                for what, k in (("singles", "states"), ("backlog", "backlog_states"))
                if not_sent(b[k])
            )
            + (f"; !! {b['duplicates']} DUPLICATES" if b["duplicates"] else "")
        )
    for point in fig.get("scaling", []):
        out.append(
            f"scaling {point['count']:>7,}: {point['rate']:>6,.0f}/s, msc line RSS "
            f"{point['rss_start_mb']:.0f} → {point['rss_end_mb']:.0f} MB "
            f"({point['rss_drift']:+.1%}), Redis keeps {point['redis_bytes_per_job_kept']:,.0f} "
            f"bytes/job for the hot window (MAILDISPATCH_JOB_HOT_TTL, 1 day), then none; md:* keys without TTL: {point['keys_without_ttl']}"
            + (f" {point['examples_without_ttl']}" if point["keys_without_ttl"] else "")
            + (f"; {point['not_sent']}" if point.get("not_sent") else "")
        )
    pipe = fig.get("pipelining")
    if pipe:
        out.append(
            f"PIPELINING offered by the slow relay: {'yes' if pipe['default'] else 'no'}; "
            + (
                "by the second slow relay: " + ("yes" if pipe["off"] else "no")
                if pipe.get("off") is not None
                else "no Relay(pipelining=False) yet: the off run is skipped"
            )
        )
    if fig.get("history"):
        from bench.history import line

        out.append(line(fig["history"]))
    if fig.get("webhooks"):
        from bench.webhooks import line as webhook_line

        out.append(webhook_line(fig["webhooks"]))
    if fig.get("hotstate"):
        from bench.hotstate import line as hotstate_line

        out.append(hotstate_line(fig["hotstate"]))
    if fig.get("scaleout"):
        from bench.scaleout import line as scaleout_line

        out.append(scaleout_line(fig["scaleout"]))
    if fig.get("dkim_us"):
        d = fig["dkim_us"]
        out.append(
            f"build one message: {d['none']:.0f} µs; + DKIM ed25519 {d['ed25519'] - d['none']:.0f}"
            f" µs; + DKIM rsa-2048 {d['rsa2048'] - d['none']:.0f} µs"
        )
    bounces = fig.get("bounces")
    if bounces:
        out.append(
            f"bounce parsing: {bounces.get('msgs/s', 0):,.0f} msgs/s on one core (target 1,000)"
        )
    if failed:
        out.append(f"FAILED parts: {', '.join(failed)}")
    return out


# -- the last line --------------------------------------------------------------------------------
def figure_line(rows: dict[str, list[Result]], fig: dict[str, Any]) -> str:
    """The last line: every figure (medians) with its ratio, machine-greppable."""
    c = cells(rows)

    def rate(key: str) -> str:
        cell = c.get(key)
        return fmt(cell.rate if cell else None)

    def r(a: str, b: str, spec: str = ".2f") -> str:
        return fmt(ratio(c.get(a), c.get(b)), spec)

    parts = []
    for tag in ("fast", "slow"):
        parts.append(
            f"{tag}: ceiling={rate(f'ceiling-{tag}')}/s ceilingN={rate(f'ceilingN-{tag}')}/s"
            f" naive={rate(f'naive-{tag}')}/s msc={rate(f'msc-{tag}')}/s"
            f" ({r(f'msc-{tag}', f'ceiling-{tag}')}x ceiling,"
            f" {r(f'msc-{tag}', f'ceilingN-{tag}')}x ceilingN,"
            f" {r(f'msc-{tag}', f'naive-{tag}', '.1f')}x naive)"
            f" msc+dkim={rate(f'msc-{tag}-dkim')}/s ({r(f'msc-{tag}-dkim', f'ceiling-{tag}')}x"
            f" ceiling, {r(f'msc-{tag}-dkim', f'naive-{tag}', '.1f')}x naive)"
        )
    parts.append(
        f"msc/ceiling1 fast={r('msc-fast', 'ceiling-fast')} slow={r('msc-slow', 'ceiling-slow')}"
    )
    parts.append(
        f"single/batch fast={r('drain-single-fast', 'drain-batch-fast')}"
        f" slow={r('drain-single-slow', 'drain-batch-slow')}"
        f" history-off/on={r('drain-batch-nohist-fast', 'drain-batch-fast')}"
    )
    parts.append(
        f"stream/batch fast={r('stream-fast', 'msc-fast')} slow={r('stream-slow', 'msc-slow')}"
    )
    for tag in ("fast", "slow"):
        paced = fig.get(f"paced-{tag}") or []
        p50, p99 = _median_of(paced, "p50_ms"), _median_of(paced, "p99_ms")
        parts.append(
            f"paced {tag} p50/p99={fmt(p50[0] if p50 else None, '.1f')}/"
            f"{fmt(p99[0] if p99 else None, '.1f')}ms"
        )
    b = fig.get("backlog")
    parts.append(f"backlog p99={fmt(b['p99_ms'] if b else None, '.0f')}ms")
    parts.append(f"pipelining on/off slow={rate('msc-slow')}/{rate('msc-slow-nopipe')}/s")
    for tag in ("fast", "slow"):
        if f"msc-amqp-{tag}" in c:
            parts.append(
                f"amqp {tag}: msc={rate(f'msc-amqp-{tag}')}/s"
                f" single/batch={r(f'drain-single-amqp-{tag}', f'drain-batch-amqp-{tag}')}"
                f" stream/batch={r(f'stream-amqp-{tag}', f'msc-amqp-{tag}')}"
            )
    p, h, lat = fig.get("producer"), fig.get("http"), fig.get("latency")
    parts.append(f"send_many={fmt(p['jobs_per_s'] if p else None)} jobs/s")
    parts.append(f"http={fmt(h['jobs_per_s'] if h else None)} jobs/s")
    parts.append(
        f"latency p50={fmt(lat['p50_ms'] if lat else None, '.1f')}ms"
        f" p99={fmt(lat['p99_ms'] if lat else None, '.1f')}ms"
    )
    parts.append(f"redis={fmt(p['redis_bytes_per_job'] if p else None)} B/job")
    scaling = fig.get("scaling") or []
    if scaling:
        parts.append(f"rss_drift={scaling[-1]['rss_drift']:+.1%}")
        parts.append("scaling=" + "/".join(f"{s['rate']:.0f}" for s in scaling) + "/s")
    bounces = fig.get("bounces")
    parts.append(f"bounces={fmt(bounces.get('msgs/s') if bounces else None)} msgs/s")
    parts.append(f"load={loadavg()}")
    return "figures: " + "; ".join(parts)


def report(
    profile: str, reps: int, rows: dict[str, list[Result]], fig: dict[str, Any], failed: list[str]
) -> str:
    """The table, the other figures, then the figure line."""
    return "\n".join(
        [table(profile, reps, rows, fig), *others(fig, failed), "", figure_line(rows, fig)]
    )
