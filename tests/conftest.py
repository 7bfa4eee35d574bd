"""Shared fixtures: real Redis, PostgreSQL, an SMTP relay, and real worker processes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# imported now, not by hypothesis' pytest plugin at the end of a session without property
# tests: that late import (assertion-rewritten, while test threads may still run) trips
# CPython 3.11's "AST constructor recursion depth mismatch" SystemError
import hypothesis  # noqa: F401
import pytest
import redis
from sqlalchemy import text

# importable from here too, where they were defined before tests/support/env.py
from tests.support.fleet import Fleet, running_fleet
from tests.support.relay import Relay
from tests.support.services import POSTGRES_URL, REDIS_HOST, REDIS_PORT, free_port, need, port_open
from worker.store.db import Store

#: the Redis database the tests own; flushed around every test that uses it (set
#: MAILDISPATCH_TEST_REDIS_DB to run two suites side by side on one Redis). Each pytest-xdist
#: worker (gw0, gw1, ...) owns the one below the previous one's.
_XDIST_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
TEST_REDIS_DB = int(os.environ.get("MAILDISPATCH_TEST_REDIS_DB", "13")) - _XDIST_WORKER


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


@pytest.fixture(scope="session")
def msc_fleet(session_relay: Relay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A real MSC Celery worker (one copy of the Procfile's line) and the scheduler."""
    with running_fleet(tmp_path_factory.mktemp("fleet"), relay_url=session_relay.url) as fleet:
        yield fleet


@pytest.fixture
def fleet(msc_fleet: Fleet, relay: Relay) -> Fleet:
    """The session fleet, with an empty relay and no job state left from other tests."""
    msc_fleet.clear_job_state()
    return msc_fleet


def logs_of(path: Path) -> str:
    """A process log, for assertion messages."""
    return path.read_text(errors="replace")[-4000:]
