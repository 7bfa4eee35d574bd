"""The test fleet: a private Redis, worker processes and a scheduler started as the Procfile starts
them, each of which a test can kill (``kill -9`` of the whole process group, as when a host dies)
or stop warmly, and the ways a user reaches them (the Dispatcher, the CLI).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from config import keys
from config.redisconn import connect
from config.settings import Settings
from producers.client import Dispatcher
from tests.support.env import make_settings, worker_env
from tests.support.queue import depth
from tests.support.redis_server import RedisServer
from tests.support.services import REPO, celery_worker_args, scheduler_args, wait_for
from worker.store.db import Store
from worker.store.models import (
    Account,
    ChannelPreference,
    FailedSend,
    SenderAddress,
    SendingDomain,
)

FINAL = {"sent", "failed", "suppressed", "bounced"}

#: an MSC relay where nothing listens, for fleets that deliver through user channels only
NO_RELAY = "smtp://127.0.0.1:9"

#: the reliability knobs shrunk so that recovery happens within seconds: a batch's lease runs
#: out 2 s after its worker died, Redis redelivers an unacked task after 4 s
FAST_RECOVERY = {
    "MAILDISPATCH_CLAIM_LEASE": "2s",
    "MAILDISPATCH_VISIBILITY_TIMEOUT": "4s",
    "MAILDISPATCH_SCHEDULER_INTERVAL": "0.1s",
}

#: the user channels (gmail and smtp) with short retry delays
USER_CHANNELS = {
    "MAILDISPATCH_GMAIL_RETRY_DELAYS": "0.3s,0.6s",
    "MAILDISPATCH_GMAIL_GIVE_UP_AFTER": "8s",
    "MAILDISPATCH_SMTP_RETRY_DELAYS": "0.3s,0.6s",
    "MAILDISPATCH_SMTP_GIVE_UP_AFTER": "8s",
    "MAILDISPATCH_SMTP_TIMEOUT": "10s",
    # the tests' user SMTP servers listen on loopback, where user servers may not be in
    # production (MAILDISPATCH_SMTP_BLOCKED_NETWORKS): allowed here, as an operator would
    "MAILDISPATCH_SMTP_ALLOWED_NETWORKS": "127.0.0.0/8,::1",
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


class Fleet:
    """A private redis-server (job state, and the broker unless ``broker_url`` names another),
    a store (a SQLite file in ``tmp`` unless ``database_url`` names another), and workers and a
    scheduler started on demand. ``env`` is added to :func:`worker_env`'s environment."""

    def __init__(
        self,
        tmp: Path,
        *,
        relay_url: str = NO_RELAY,
        broker_url: str | None = None,
        database_url: str | None = None,
        appendonly: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.server = RedisServer(tmp / "redis", appendonly=appendonly).start()
        self.database_url = database_url or f"sqlite:///{tmp / 'store.db'}"
        extra = {"MAILDISPATCH_REDIS_URL": self.server.url, **(env or {})}
        self.env = worker_env(broker_url or self.server.url, self.database_url, relay_url, **extra)
        self.procs: list[Proc] = []
        # the job state's Redis: this private server, or the cluster ``env`` names
        self.redis = connect(self.env["MAILDISPATCH_REDIS_URL"])
        try:
            self.settings: Settings = make_settings(self.env)
            self.dispatcher = Dispatcher(self.settings)
        except BaseException:
            self.server.stop()
            raise
        self._workers = 0
        self._closed = False

    @property
    def database_file(self) -> Path:
        """The store's SQLite file."""
        return Path(self.database_url.removeprefix("sqlite:///"))

    def start(self, args: list[str], log_name: str) -> Proc:
        """Start a process with the fleet's environment, its output in ``tmp/log_name``."""
        proc = Proc(args, self.env, self.tmp / log_name)
        self.procs.append(proc)
        return proc

    def worker(
        self, queue: str = "mail.msc", *, concurrency: int = 1, pool: str | None = None
    ) -> Proc:
        """Start a Celery worker and wait until it is ready. The Procfile's pool unless ``pool``
        names another: one process (solo) per copy of the ``msc`` line, prefork with
        ``concurrency`` processes for the other queues."""
        self._workers += 1
        name = f"w{self._workers}-{uuid.uuid4().hex[:6]}"
        pool = pool or ("solo" if queue == "mail.msc" else "prefork")
        procs = 1 if pool == "solo" else concurrency
        args = [*celery_worker_args(queue, concurrency=procs, pool=pool), "-n", name]
        proc = self.start(args, f"worker-{self._workers}.log")
        wait_for(lambda: "ready" in proc.text(), 60, 0.1, "worker ready")
        return proc

    def scheduler(self) -> Proc:
        """Start ``maildispatch scheduler``."""
        proc = self.start(scheduler_args(), "scheduler.log")
        wait_for(lambda: "scheduler_started" in proc.text(), 30, 0.1, "scheduler started")
        return proc

    def states(self, ids: Iterable[object]) -> dict[str, str]:
        """Job id -> state, read straight from Redis."""
        names = [str(i) for i in ids]
        pipe = self.redis.pipeline(transaction=False)
        for i in names:
            pipe.hget(keys.job(i), "state")
        return {i: (s or b"").decode() for i, s in zip(names, pipe.execute(), strict=True)}

    def in_state(self, ids: Iterable[object], state: str) -> int:
        """How many of the jobs are in ``state`` now."""
        return sum(1 for s in self.states(ids).values() if s == state)

    def wait_final(self, ids: Iterable[object], timeout: float = 45) -> dict[str, str]:
        """Wait until every job is final; returns their states."""
        ids = list(ids)
        states: dict[str, str] = {}

        def done() -> bool:
            nonlocal states
            states = self.states(ids)
            return all(s in FINAL for s in states.values())

        try:
            wait_for(done, timeout, 0.1, "every job in a final state")
        except AssertionError:
            left = {s for s in states.values() if s not in FINAL}
            raise AssertionError(
                f"jobs not final after {timeout}s: {left}\n{self.logs(tail=3000)}"
            ) from None
        return states

    def wait_drained(self, timeout: float = 30) -> None:
        """The retry backlog, the in-flight registry and the broker queue are all empty."""

        def drained() -> bool:
            return (
                all(self.redis.zcard(name) == 0 for name in keys.SCHEDULES)
                and self.redis.zcard(keys.INFLIGHT) == 0
                and depth(self.redis, "mail.msc") == 0
            )

        wait_for(drained, timeout, 0.2, "schedule, in-flight registry and queue drained")

    def counters(self) -> dict[str, int]:
        """``md:counters`` as ints."""
        return {k.decode(): int(v) for k, v in self.redis.hgetall(keys.COUNTERS).items()}

    def cli(
        self, *args: str, stdin: str = "", env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``maildispatch ARGS`` with the fleet's environment (and ``env``)."""
        return subprocess.run(
            [sys.executable, "-m", "producers.cli", *args],
            env=self.env | dict(env or {}),
            cwd=REPO,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def cli_json(self, *args: str, stdin: str = "") -> Any:
        """``maildispatch ARGS --json``, parsed; fails the test on a non-zero exit."""
        out = self.cli(*args, "--json", stdin=stdin)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def status(self, job_id: uuid.UUID | str) -> dict[str, Any]:
        """``maildispatch status JOB --json``."""
        return dict(self.cli_json("status", str(job_id)))

    def account(self, owner: str, channel: str) -> dict[str, Any]:
        """The owner's account as ``accounts list --json`` shows it."""
        rows = self.cli_json("accounts", "list", "--owner", owner)
        found = [a for e in rows for a in e["accounts"] if a["channel"] == channel]
        assert len(found) == 1, rows
        return dict(found[0])

    def clear_job_state(self) -> None:
        """Forget job state left by other tests.

        Only maildispatch's keys go: kombu's queue bindings must survive, or publishers that
        declared them earlier would route into nothing.
        """
        stale = list(self.redis.scan_iter("md:*", count=1000))
        if stale:
            self.redis.delete(*stale)

    def forget(self, owner: str) -> None:
        """Remove the owner's rows and every job key: the store and Redis as the test found them."""
        store = Store(self.database_url)
        try:
            with store.session() as s:
                for model in (Account, ChannelPreference, FailedSend, SendingDomain, SenderAddress):
                    s.execute(delete(model).where(model.owner == owner))
        finally:
            store.dispose()
        self.clear_job_state()

    def logs(self, tail: int | None = None) -> str:
        """Every process log under its name; the last ``tail`` characters of each if given."""
        texts = ((p.log.name, p.text()) for p in self.procs)
        return "\n".join(f"--- {name}\n{text[-tail:] if tail else text}" for name, text in texts)

    def close(self) -> None:
        """Stop every process (warm, then hard), release the clients and stop the Redis."""
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self.procs):
            proc.stop(timeout=10)
        self.dispatcher.close()
        self.redis.close()
        self.server.stop()


@contextmanager
def running_fleet(
    tmp: Path,
    queue: str = "mail.msc",
    *,
    relay_url: str = NO_RELAY,
    broker_url: str | None = None,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
    pool: str | None = None,
    concurrency: int = 1,
) -> Iterator[Fleet]:
    """A :class:`Fleet` with a worker on ``queue`` and the scheduler running; closed at exit."""
    fleet = Fleet(
        tmp, relay_url=relay_url, broker_url=broker_url, database_url=database_url, env=env
    )
    try:
        fleet.worker(queue, concurrency=concurrency, pool=pool)
        fleet.scheduler()
        yield fleet
    finally:
        fleet.close()
