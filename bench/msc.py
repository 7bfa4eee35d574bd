"""maildispatch in the bench: the Procfile's ``msc`` line started once, as a user starts it, fed
by ``Dispatcher.send``/``send_many`` (or the HTTP batch endpoint), counted at the relay, and
every job's final state read back from Redis."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    BOUNCE_DOMAIN,
    DOMAIN,
    REPO,
    SECRET,
    Proc,
    Relay,
    children,
    descendants,
    job,
    tree_cpu,
    tree_rss,
)

#: worker processes the ``msc`` line runs (``maildispatch worker msc`` reads the same variable);
#: the bench runs as many ceiling client processes beside it
MSC_PROCESSES = int(os.environ.get("MAILDISPATCH_MSC_PROCESSES") or 0) or os.cpu_count() or 1
#: states after which a worker never touches the job again
FINAL = frozenset({"sent", "failed", "bounced", "suppressed", "cancelled"})
#: Celery's "celery@host ready." line, once per worker process
_READY = re.compile(r"@\S+ ready\.")


def procfile_command(name: str = "msc") -> list[str]:
    """The Procfile line ``name:`` run by ``sh`` as honcho runs it (``exec``: the process is the
    line's program itself); :func:`worker_env` puts this interpreter's ``bin`` first on PATH, so
    ``celery`` or ``maildispatch`` is the project's own."""
    for line in (REPO / "Procfile").read_text().splitlines():
        key, _, command = line.partition(":")
        if key.strip() == name:
            return ["sh", "-c", "exec " + command.strip()]
    raise RuntimeError(f"no {name}: line in the Procfile")


def worker_env(
    redis_url: str,
    relay_url: str,
    tmp: Path,
    dkim: tuple[str, str] | None = None,
    broker_url: str | None = None,
) -> dict[str, str]:
    """The environment of bench workers and producers: private Redis (or ``broker_url`` as the
    broker, Redis kept for job state), the bench relay."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    # not resolved: .venv/bin/python is a link to the base interpreter, its directory is the venv's
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        {
            "MAILDISPATCH_BROKER_URL": broker_url or redis_url,
            "MAILDISPATCH_DATABASE_URL": f"sqlite:///{tmp / 'bench-store.db'}",
            "MAILDISPATCH_MSC_RELAYS": relay_url,
            "MAILDISPATCH_SECRET_KEY": SECRET,
            "MAILDISPATCH_MSC_DOMAIN": DOMAIN,
            "MAILDISPATCH_BOUNCE_DOMAIN": BOUNCE_DOMAIN,
            "MAILDISPATCH_LOG_FORMAT": "json",
            "MAILDISPATCH_MSC_PROCESSES": str(MSC_PROCESSES),
            "PYTHONPATH": str(REPO),
        }
    )
    if broker_url is not None:
        env["MAILDISPATCH_REDIS_URL"] = redis_url
    if dkim is not None:
        env["MAILDISPATCH_DKIM_PRIVATE_KEY_FILE"] = dkim[0]
        env["MAILDISPATCH_DKIM_SELECTOR"] = dkim[1]
    return env


def settings_from(env: dict[str, str]) -> Any:
    """Settings equal to what the workers read from ``env``."""
    from config.settings import Settings

    names = set(Settings.model_fields)
    fields = {
        k.removeprefix("MAILDISPATCH_").lower(): v
        for k, v in env.items()
        if k.startswith("MAILDISPATCH_")
    }
    return Settings(**{k: v for k, v in fields.items() if k in names})  # type: ignore[arg-type]


class Fleet:
    """The Procfile's ``msc`` line, started once, and every process it starts."""

    def __init__(self, env: dict[str, str], tmp: Path, tag: str) -> None:
        self.env = env
        self.proc = Proc(procfile_command("msc"), tmp / f"msc-{tag}.log", env)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until every worker process of the line logged Celery's ``ready``.

        One process (a solo-pool ``celery`` line) logs it once; a supervisor's workers log it
        once each, its children counted as they appear. Past a few seconds after the first
        ``ready``, what is ready is taken as the fleet (a pool's children log nothing).
        """
        deadline = time.monotonic() + timeout
        first = 0.0
        while time.monotonic() < deadline:
            ready = len(_READY.findall(self.proc.log.read_text(errors="replace")))
            if ready:
                first = first or time.monotonic()
                if ready >= max(1, len(children(self.proc.pid))):
                    return
                if time.monotonic() - first > 10:
                    return
            if self.proc.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("the msc line did not start:\n" + self.proc.tail())

    def pids(self) -> list[int]:
        """The line's process and all it started."""
        return [self.proc.pid, *descendants(self.proc.pid)]

    def workers(self) -> int:
        """Worker processes running: the line's children, or the line itself when it has none."""
        return max(1, len(children(self.proc.pid)))

    def rss(self) -> int:
        """Resident memory of every process of the line, summed."""
        return tree_rss(self.proc.pid)

    def cpu(self) -> float:
        """CPU seconds used so far by every process of the line (exited ones included)."""
        return tree_cpu(self.proc.pid)

    def stop(self) -> None:
        """Warm shutdown of the line (its process group)."""
        self.proc.stop(timeout=30.0)


def jobs(count: int, run: str) -> list[dict[str, Any]]:
    """``count`` bench jobs as a producing service would pass them (plain dicts)."""
    return [job(i, run) for i in range(count)]


def deliver(
    dispatcher: Any,
    relay: Relay,
    items: Sequence[dict[str, Any]],
    timeout: float,
    reset: bool = True,
) -> dict[str, Any]:
    """send_many → workers → relay; the wall time from the first enqueue to the last 250."""
    if reset:
        relay.reset()
    start = time.time()
    ids = dispatcher.send_many(items)
    enqueued = time.time()
    stats = relay.wait(len(items), timeout)
    end = stats["last"] if stats["unique"] >= len(items) else time.time()
    return {
        "ids": ids,
        "start": start,
        "enqueue_s": enqueued - start,
        "seconds": max(end - start, 1e-9),
        "delivered": stats["unique"],
        "duplicates": stats["duplicates"],
    }


def final_states(dispatcher: Any, ids: Sequence[Any]) -> dict[str, int]:
    """How many of the jobs are in each state (read from Redis)."""
    counts: dict[str, int] = {}
    for state, _ in job_fields(dispatcher, ids):
        counts[state] = counts.get(state, 0) + 1
    return counts


def job_fields(dispatcher: Any, ids: Sequence[Any]) -> list[tuple[str, float]]:
    """(state, updated_at) of each job, in order; ``missing`` for a job Redis does not know."""
    from config import keys

    out: list[tuple[str, float]] = []
    pipe = dispatcher.redis.pipeline(transaction=False)
    for chunk_start in range(0, len(ids), 5000):
        for i in ids[chunk_start : chunk_start + 5000]:
            pipe.hmget(keys.job(str(i)), "state", "updated_at")
        for state, updated in pipe.execute():
            out.append((state.decode() if state else "missing", float(updated or 0)))
    return out


def wait_final(dispatcher: Any, ids: Sequence[Any], timeout: float = 15.0) -> dict[str, int]:
    """The jobs' states once none is still on its way (a finish is written just after the 250),
    or as they are at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        counts = final_states(dispatcher, ids)
        if all(state in FINAL for state in counts) or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def not_sent(states: dict[str, int]) -> str:
    """``""`` when every job is ``sent``; otherwise the loud count of the others, by state."""
    other = {k: v for k, v in sorted(states.items()) if k != "sent"}
    if not other:
        return ""
    shown = ", ".join(f"{v} {k}" for k, v in other.items())
    return f"!! {sum(other.values())} NOT SENT ({shown})"


def processes(n: int) -> str:
    """``1 worker process``, ``2 worker processes``."""
    return f"{n} worker process{'' if n == 1 else 'es'}"
