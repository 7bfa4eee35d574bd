"""maildispatch in the bench: ``msc`` workers started exactly as the Procfile starts them, fed
by ``Dispatcher.send_many`` (or the HTTP batch endpoint), counted at the relay."""

from __future__ import annotations

import os
import shlex
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
    cpu_seconds,
    job,
    rss_bytes,
)

#: copies of the Procfile's ``msc`` line the bench runs: one per core, as an operator scales it
#: (``honcho start -c msc=2``, ``heroku ps:scale msc=2``); each copy is one process (solo pool)
MSC_PROCESSES = os.cpu_count() or 1


def procfile_command(name: str = "msc") -> list[str]:
    """The Procfile line ``name:`` run by ``sh`` as honcho runs it, ``celery`` from this
    interpreter (``exec``: the process is the worker itself)."""
    for line in (REPO / "Procfile").read_text().splitlines():
        key, _, command = line.partition(":")
        if key.strip() == name:
            args = shlex.split(command)  # only to find the program
            command = command.strip()
            if args[0] == "celery":
                command = shlex.join([sys.executable, "-m", "celery"]) + command[len("celery") :]
            return ["sh", "-c", "exec " + command]
    raise RuntimeError(f"no {name}: line in the Procfile")


def worker_env(
    redis_url: str, relay_url: str, tmp: Path, dkim: tuple[str, str] | None = None
) -> dict[str, str]:
    """The environment of bench workers and producers: private Redis, the bench relay."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    env.update(
        {
            "MAILDISPATCH_BROKER_URL": redis_url,
            "MAILDISPATCH_DATABASE_URL": f"sqlite:///{tmp / 'bench-store.db'}",
            "MAILDISPATCH_MSC_RELAYS": relay_url,
            "MAILDISPATCH_SECRET_KEY": SECRET,
            "MAILDISPATCH_MSC_DOMAIN": DOMAIN,
            "MAILDISPATCH_BOUNCE_DOMAIN": BOUNCE_DOMAIN,
            "MAILDISPATCH_LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO),
        }
    )
    if dkim is not None:
        env["MAILDISPATCH_DKIM_PRIVATE_KEY_FILE"] = dkim[0]
        env["MAILDISPATCH_DKIM_SELECTOR"] = dkim[1]
    return env


def settings_from(env: dict[str, str]) -> Any:
    """Settings equal to what the workers read from ``env``."""
    from config.settings import Settings

    fields = {
        k.removeprefix("MAILDISPATCH_").lower(): v
        for k, v in env.items()
        if k.startswith("MAILDISPATCH_")
    }
    return Settings(**fields)  # type: ignore[arg-type]


class Fleet:
    """The Procfile's ``msc`` worker(s) against the bench Redis and relay."""

    def __init__(
        self, env: dict[str, str], tmp: Path, tag: str, processes: int = MSC_PROCESSES
    ) -> None:
        self.env = env
        self.procs = [
            Proc(procfile_command("msc"), tmp / f"msc-{tag}-{n}.log", env) for n in range(processes)
        ]

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until every worker logged ``ready``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("ready" in p.log.read_text(errors="replace") for p in self.procs):
                return
            if any(p.popen.poll() is not None for p in self.procs):
                break
            time.sleep(0.1)
        raise RuntimeError("msc worker did not start:\n" + self.procs[0].tail())

    def pids(self) -> list[int]:
        """The worker processes that do the work: the prefork children (or the main process)."""
        out: list[int] = []
        for p in self.procs:
            kids = children(p.pid)
            out.extend(kids or [p.pid])
        return out

    def rss(self) -> int:
        """Resident memory of the delivering processes, summed."""
        return sum(rss_bytes(pid) for pid in self.pids())

    def cpu(self) -> float:
        """CPU seconds used so far by the workers (main processes and their children)."""
        total = 0.0
        for p in self.procs:
            total += cpu_seconds(p.pid) + sum(cpu_seconds(c) for c in children(p.pid))
        return total

    def stop(self) -> None:
        """Warm shutdown of every worker."""
        for p in self.procs:
            p.stop()


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
    from config import keys

    counts: dict[str, int] = {}
    pipe = dispatcher.redis.pipeline(transaction=False)
    for chunk_start in range(0, len(ids), 5000):
        for i in ids[chunk_start : chunk_start + 5000]:
            pipe.hget(keys.job(str(i)), "state")
        for state in pipe.execute():
            name = state.decode() if state else "missing"
            counts[name] = counts.get(name, 0) + 1
    return counts
