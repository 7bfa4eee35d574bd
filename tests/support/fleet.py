"""A fleet to break on purpose: a private Redis, worker processes and a scheduler, each of which a
test can kill (``kill -9`` of the whole process group, as when a host dies), stop warmly or
restart. Used by tests/faults/ and the pacing tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path

import redis

from config import keys
from config.settings import Settings
from producers.client import Dispatcher
from tests.support.queue import depth
from tests.support.redis_server import RedisServer
from tests.support.services import REPO, celery_worker_args, scheduler_args, wait_for

FINAL = {"sent", "failed", "suppressed", "bounced"}

#: the reliability knobs shrunk so that recovery happens within seconds: a batch's lease runs
#: out 2 s after its worker died, Redis redelivers an unacked task after 4 s
FAST_RECOVERY = {
    "MAILDISPATCH_CLAIM_LEASE": "2s",
    "MAILDISPATCH_VISIBILITY_TIMEOUT": "4s",
    "MAILDISPATCH_SCHEDULER_INTERVAL": "0.1s",
}


class Proc:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                args,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )

    def text(self) -> str:
        """What it printed so far."""
        return self.log.read_text(errors="replace")

    def kill9(self) -> None:
        """SIGKILL the whole group at once (the main process and its pool children)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (Celery's warm shutdown), wait, then SIGKILL what is left of the group."""
        if self.popen.poll() is None:
            self.popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(10)


class ProcFleet:
    """A private Redis (broker and job state) with workers and a scheduler started on demand."""

    def __init__(
        self,
        tmp: Path,
        env: dict[str, str],
        *,
        redis_server: RedisServer,
        broker_url: str | None = None,
    ) -> None:
        self.tmp = tmp
        self.server = redis_server
        self.env = dict(env)
        self.env["MAILDISPATCH_REDIS_URL"] = redis_server.url
        self.env["MAILDISPATCH_BROKER_URL"] = broker_url or redis_server.url
        self.procs: list[Proc] = []
        self.redis = redis.Redis.from_url(redis_server.url)
        self._workers = 0

    @property
    def settings(self) -> Settings:
        """The settings the processes read (for a producer in the test)."""
        from tests.conftest import make_settings

        return make_settings(self.env)

    def dispatcher(self) -> Dispatcher:
        """A producer on this fleet."""
        return Dispatcher(self.settings)

    def worker(self, concurrency: int = 2, queue: str = "mail.msc", ready: bool = True) -> Proc:
        """Start a Celery worker with the Procfile's pool and wait until it is ready: one process
        (solo) per copy of the ``msc`` line, prefork with ``concurrency`` for the other queues."""
        self._workers += 1
        name = f"w{self._workers}-{uuid.uuid4().hex[:6]}"
        pool, procs = ("solo", 1) if queue == "mail.msc" else ("prefork", concurrency)
        args = [*celery_worker_args(queue, concurrency=procs, pool=pool), "-n", name]
        proc = Proc(args, self.env, self.tmp / f"worker-{self._workers}.log")
        self.procs.append(proc)
        if ready:
            wait_for(lambda: "ready" in proc.text(), 60, 0.1, "worker ready")
        return proc

    def scheduler(self) -> Proc:
        """Start ``maildispatch scheduler``."""
        proc = Proc(scheduler_args(), self.env, self.tmp / "scheduler.log")
        self.procs.append(proc)
        wait_for(lambda: "scheduler_started" in proc.text(), 30, 0.1, "scheduler started")
        return proc

    def states(self, ids: Iterable[object]) -> dict[str, str]:
        """Job id -> state, read straight from Redis."""
        ids = [str(i) for i in ids]
        pipe = self.redis.pipeline(transaction=False)
        for i in ids:
            pipe.hget(keys.job(i), "state")
        return {i: (s or b"").decode() for i, s in zip(ids, pipe.execute(), strict=True)}

    def in_state(self, ids: Iterable[object], state: str) -> int:
        """How many of the jobs are in ``state`` now."""
        return sum(1 for s in self.states(ids).values() if s == state)

    def wait_final(self, ids: list[object], timeout: float) -> dict[str, str]:
        """Wait until every job is final; returns their states."""
        states: dict[str, str] = {}

        def done() -> bool:
            nonlocal states
            states = self.states(ids)
            return all(s in FINAL for s in states.values())

        try:
            wait_for(done, timeout, 0.2, "every job in a final state")
        except AssertionError:
            left = {s for s in states.values() if s not in FINAL}
            raise AssertionError(
                f"jobs not final after {timeout}s: {left}\n{self.logs()}"
            ) from None
        return states

    def wait_drained(self, timeout: float = 30) -> None:
        """The retry backlog, the in-flight registry and the broker queue are all empty."""

        def drained() -> bool:
            return (
                self.redis.zcard(keys.SCHEDULE) == 0
                and self.redis.zcard(keys.INFLIGHT) == 0
                and depth(self.redis, "mail.msc") == 0
            )

        wait_for(drained, timeout, 0.2, "schedule, in-flight registry and queue drained")

    def counters(self) -> dict[str, int]:
        """``md:counters`` as ints."""
        return {k.decode(): int(v) for k, v in self.redis.hgetall(keys.COUNTERS).items()}

    def logs(self) -> str:
        """The tail of every process log, for assertion messages."""
        return "\n".join(f"--- {p.log.name}\n{p.text()[-3000:]}" for p in self.procs)

    def close(self) -> None:
        """Stop every process (warm, then hard) and close the client."""
        for proc in reversed(self.procs):
            proc.stop(timeout=10)
        self.redis.close()
