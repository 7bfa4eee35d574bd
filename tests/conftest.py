"""Shared fixtures: real Redis, PostgreSQL, an SMTP relay, and real worker processes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# imported now, not by hypothesis' pytest plugin at the end of a session without property
# tests: that late import (assertion-rewritten, while test threads may still run) trips
# CPython 3.11's "AST constructor recursion depth mismatch" SystemError
import hypothesis  # noqa: F401
import pytest
import redis
from sqlalchemy import text

from config.settings import Settings
from tests.support.relay import Relay
from tests.support.services import (
    POSTGRES_URL,
    REDIS_HOST,
    REDIS_PORT,
    background,
    celery_worker_args,
    free_port,
    need,
    port_open,
    scheduler_args,
    wait_for,
)
from worker.store.db import Store

#: the Redis database the tests own; flushed around every test that uses it (set
#: MAILDISPATCH_TEST_REDIS_DB to run two suites side by side on one Redis). Each pytest-xdist
#: worker (gw0, gw1, ...) owns the one below the previous one's.
_XDIST_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
TEST_REDIS_DB = int(os.environ.get("MAILDISPATCH_TEST_REDIS_DB", "13")) - _XDIST_WORKER
SECRET = "test-secret-key-0123456789abcdef"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database of the machine's Redis for the tests."""
    need("Redis", port_open(REDIS_HOST, REDIS_PORT))
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{TEST_REDIS_DB}"


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the test database, emptied before and after the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The machine's PostgreSQL test database."""
    need("PostgreSQL", port_open("127.0.0.1", 5432))
    return POSTGRES_URL


@contextmanager
def store_on(request: pytest.FixtureRequest, tmp_path: Path, *, migrate: bool) -> Iterator[Store]:
    """A store on the engine the test is parametrized with (``request.param``)."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'var' / 'store.db'}", migrate=migrate)
        yield s
        s.dispose()
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = Store(url, migrate=False)
    with admin.engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    s = Store(f"{url}?options=-csearch_path%3D{schema}", migrate=migrate)
    yield s
    s.dispose()
    with admin.engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The Failed Sends store on both engines: a SQLite file, and a throwaway PostgreSQL schema."""
    with store_on(request, tmp_path, migrate=True) as s:
        yield s


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """As ``store``, with no schema yet: for tests of the migrations themselves."""
    with store_on(request, tmp_path, migrate=False) as s:
        yield s


@pytest.fixture(scope="session")
def session_relay() -> Iterator[Relay]:
    """One relay for the session (the session worker delivers to it)."""
    relay = Relay(free_port()).start()
    yield relay
    relay.stop()


@pytest.fixture
def relay(session_relay: Relay) -> Relay:
    """The session relay, emptied for this test."""
    session_relay.handler.reset()
    return session_relay


def worker_env(redis_url: str, database_url: str, relay_url: str, **extra: str) -> dict[str, str]:
    """Environment for worker processes under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    env.update(
        {
            "MAILDISPATCH_BROKER_URL": redis_url,
            "MAILDISPATCH_DATABASE_URL": database_url,
            "MAILDISPATCH_MSC_RELAYS": relay_url,
            "MAILDISPATCH_SECRET_KEY": SECRET,
            "MAILDISPATCH_MSC_DOMAIN": "mail.operator.test",
            "MAILDISPATCH_BOUNCE_DOMAIN": "bounces.operator.test",
            "MAILDISPATCH_MSC_RETRY_DELAYS": "0.3s,0.6s",
            "MAILDISPATCH_MSC_GIVE_UP_AFTER": "6s",
            "MAILDISPATCH_SCHEDULER_INTERVAL": "0.1s",
            "MAILDISPATCH_LOG_FORMAT": "json",
        }
    )
    env.update(extra)
    return env


def make_settings(env: dict[str, str], **overrides: Any) -> Settings:
    """Settings equal to what the worker processes read from ``env``."""
    fields = {
        k.removeprefix("MAILDISPATCH_").lower(): v
        for k, v in env.items()
        if k.startswith("MAILDISPATCH_")
    }
    return Settings(**(fields | overrides))


class Fleet:
    """A running MSC worker and scheduler, with the settings a producer needs to reach them.

    The fleet has a private redis-server (its broker and job state), so no other test's jobs
    reach its worker and no other suite on the machine shares its queues.
    """

    def __init__(
        self, env: dict[str, str], settings: Settings, database_url: str, redis_url: str
    ) -> None:
        self.env = env
        self.settings = settings
        self.database_url = database_url
        self.redis_url = redis_url
        self.redis = redis.Redis.from_url(redis_url)


@contextmanager
def running_fleet(
    tmp: Path,
    relay_url: str,
    *,
    broker_url: str | None = None,
    pool: str = "solo",
    concurrency: int = 1,
    database_url: str | None = None,
) -> Iterator[Fleet]:
    """An MSC worker and the scheduler with a private redis-server for job state.

    The broker is that Redis too unless ``broker_url`` names another (RabbitMQ); the store is
    a SQLite file unless ``database_url`` names another.
    """
    from tests.support.redis_server import RedisServer

    server = RedisServer(tmp / "redis").start()
    database_url = database_url or f"sqlite:///{tmp / 'store.db'}"
    extra = {"MAILDISPATCH_REDIS_URL": server.url} if broker_url else {}
    env = worker_env(broker_url or server.url, database_url, relay_url, **extra)
    try:
        with (
            background(
                celery_worker_args("mail.msc", concurrency=concurrency, pool=pool),
                env,
                tmp / "worker.log",
            ),
            background(scheduler_args(), env, tmp / "scheduler.log"),
        ):
            wait_for(
                lambda: "ready" in (tmp / "worker.log").read_text(errors="replace"),
                60,
                what="worker ready",
            )
            fleet = Fleet(env, make_settings(env), database_url, server.url)
            yield fleet
            fleet.redis.close()
    finally:
        server.stop()


def clear_job_state(fleet: Fleet) -> Fleet:
    """Forget job state left by other tests.

    Only maildispatch's keys go: kombu's queue bindings must survive, or publishers that
    declared them earlier would route into nothing.
    """
    stale = list(fleet.redis.scan_iter("md:*", count=1000))
    if stale:
        fleet.redis.delete(*stale)
    return fleet


@pytest.fixture(scope="session")
def msc_fleet(session_relay: Relay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A real MSC Celery worker (one copy of the Procfile's line) and the scheduler."""
    with running_fleet(tmp_path_factory.mktemp("fleet"), session_relay.url) as fleet:
        yield fleet


@pytest.fixture
def fleet(msc_fleet: Fleet, relay: Relay) -> Fleet:
    """The session fleet, with an empty relay and no job state left from other tests."""
    return clear_job_state(msc_fleet)


def logs_of(path: Path) -> str:
    """A process log, for assertion messages."""
    return path.read_text(errors="replace")[-4000:]
