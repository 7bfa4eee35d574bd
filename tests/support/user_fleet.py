"""A real worker (and the scheduler) for a user channel (gmail or smtp), with its own Redis.

Like the MSC fleet in tests/conftest.py: a private redis-server, a SQLite store in a temporary
folder, the worker command line of the Procfile. Helpers drive it as a user would: accounts
through the CLI (secrets on stdin), jobs through the Dispatcher, the state through ``status``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from config.settings import Settings
from producers.client import Dispatcher
from tests.conftest import make_settings, worker_env
from tests.support.services import REPO, background, celery_worker_args, scheduler_args, wait_for
from worker.store.db import Store

FINAL = {"sent", "failed", "suppressed", "bounced"}


class UserFleet:
    """The running worker and scheduler, and what a test needs to reach them."""

    def __init__(self, env: dict[str, str], tmp: Path, redis_url: str, database_url: str) -> None:
        self.env = env
        self.tmp = tmp
        self.settings: Settings = make_settings(env)
        self.redis = redis.Redis.from_url(redis_url)
        self.database_url = database_url
        self.database_file = Path(database_url.removeprefix("sqlite:///"))
        self.store = Store(database_url)
        self.dispatcher = Dispatcher(self.settings)

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """``maildispatch ARGS`` with the fleet's environment."""
        return subprocess.run(
            [sys.executable, "-m", "producers.cli", *args],
            env=self.env,
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

    def wait_final(self, *ids: uuid.UUID, timeout: float = 45) -> dict[str, dict[str, str]]:
        """Every job's state hash once all are final."""
        states: dict[str, dict[str, str]] = {}

        def done() -> bool:
            nonlocal states
            states = {str(i): self.dispatcher.status(i) or {} for i in ids}
            return all(s.get("state") in FINAL for s in states.values())

        wait_for(done, timeout, 0.1, "jobs to reach a final state")
        return states

    def account(self, owner: str, channel: str) -> dict[str, Any]:
        """The owner's account as ``accounts list --json`` shows it."""
        rows = self.cli_json("accounts", "list", "--owner", owner)
        found = [a for e in rows for a in e["accounts"] if a["channel"] == channel]
        assert len(found) == 1, rows
        return dict(found[0])

    def logs(self) -> str:
        """Everything the worker and scheduler wrote."""
        return "".join(
            (self.tmp / name).read_text(errors="replace")
            for name in ("worker.log", "scheduler.log")
            if (self.tmp / name).exists()
        )

    def forget(self, owner: str) -> None:
        """Remove the owner's rows and every job key: the store and Redis as the test found them."""
        from sqlalchemy import delete

        from worker.store.models import Account, ChannelPreference, FailedSend

        with self.store.session() as s:
            for model in (Account, ChannelPreference, FailedSend):
                s.execute(delete(model).where(model.owner == owner))
        # kombu's queue bindings stay: publishers that declared them would route into nothing
        stale = list(self.redis.scan_iter("md:*", count=1000))
        if stale:
            self.redis.delete(*stale)

    def close(self) -> None:
        """Release clients."""
        self.dispatcher.close()
        self.redis.close()
        self.store.dispose()


def user_env(redis_url: str, database_url: str, **extra: str) -> dict[str, str]:
    """The worker environment of the test fleets: short retry delays for gmail and smtp."""
    settings = {
        "MAILDISPATCH_GMAIL_RETRY_DELAYS": "0.3s,0.6s",
        "MAILDISPATCH_GMAIL_GIVE_UP_AFTER": "8s",
        "MAILDISPATCH_SMTP_RETRY_DELAYS": "0.3s,0.6s",
        "MAILDISPATCH_SMTP_GIVE_UP_AFTER": "8s",
        "MAILDISPATCH_SMTP_TIMEOUT": "10s",
        # the tests' user SMTP servers listen on loopback, where user servers may not be in
        # production (MAILDISPATCH_SMTP_BLOCKED_NETWORKS): allowed here, as an operator would
        "MAILDISPATCH_SMTP_ALLOWED_NETWORKS": "127.0.0.0/8,::1",
    }
    return worker_env(redis_url, database_url, "smtp://127.0.0.1:9", **(settings | extra))


@contextmanager
def user_fleet(queue: str, tmp: Path, **extra: str) -> Iterator[UserFleet]:
    """A worker on ``queue`` and the scheduler, as the Procfile starts them."""
    from tests.support.redis_server import RedisServer

    server = RedisServer(tmp / "redis").start()
    database_url = f"sqlite:///{tmp / 'store.db'}"
    env = user_env(server.url, database_url, **extra)
    try:
        with (
            background(
                celery_worker_args(queue, concurrency=1, pool="prefork"), env, tmp / "worker.log"
            ),
            background(scheduler_args(), env, tmp / "scheduler.log"),
        ):
            wait_for(
                lambda: "ready" in (tmp / "worker.log").read_text(errors="replace"),
                60,
                what="worker ready",
            )
            fleet = UserFleet(env, tmp, server.url, database_url)
            try:
                yield fleet
            finally:
                fleet.close()
    finally:
        server.stop()


def redis_dump(client: redis.Redis) -> bytes:
    """Every key and value of a Redis database, as bytes to search."""
    out: list[bytes] = []
    for key in client.scan_iter("*", count=1000):
        out.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            out.append(client.get(key) or b"")
        elif kind == "hash":
            for k, v in client.hgetall(key).items():
                out += [k, v]
        elif kind == "list":
            out += client.lrange(key, 0, -1)
        elif kind == "set":
            out += list(client.smembers(key))
        elif kind == "zset":
            out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
    return b"\n".join(out)


def database_bytes(path: Path) -> bytes:
    """The SQLite file and its WAL/SHM companions (recent writes live in the WAL)."""
    return b"".join(
        p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")) if p.is_file()
    )
