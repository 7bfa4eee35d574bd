"""A SQLite store serves one machine: a worker or scheduler starting on a second host of the
fleet is refused with a clear error; with PostgreSQL, hosts join freely. (Hosts are told apart
by MAILDISPATCH_HOST_ID here: one machine plays two.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from config import keys
from tests.support.fleet import Fleet
from tests.support.services import celery_worker_args, scheduler_args, wait_for

pytestmark = pytest.mark.timeout(180)


def _exits(fleet: Fleet, args: list[str], name: str, host: str) -> tuple[int | None, str]:
    """Start a process as ``host``; its exit code once it exits (None: still running) and log."""
    env = dict(fleet.env)
    fleet.env = env | {"MAILDISPATCH_HOST_ID": host}
    try:
        proc = fleet.start(args, name)
    finally:
        fleet.env = env
    wait_for(lambda: proc.popen.poll() is not None or "ready" in proc.text(), 60, 0.1, name)
    return proc.popen.poll(), proc.text()


def test_sqlite_refuses_a_second_host_postgresql_does_not(
    tmp_path: Path, postgres_url: str
) -> None:
    fleet = Fleet(tmp_path / "sqlite")
    try:
        code, _ = _exits(fleet, celery_worker_args("mail.msc"), "first.log", "host-a")
        assert code is None  # the first host starts
        assert fleet.redis.hexists(keys.FLEET_HOSTS, "host-a")
        code, text = _exits(fleet, celery_worker_args("mail.msc"), "second.log", "host-b")
        assert code not in (None, 0), text
        assert "host-a" in text and "PostgreSQL" in text and "refusing to start" in text
        code, text = _exits(fleet, scheduler_args(), "scheduler.log", "host-b")
        assert code not in (None, 0), text
        assert "PostgreSQL" in text
        # the same host again (a second worker process on host-a) is welcome
        code, _ = _exits(fleet, celery_worker_args("mail.msc"), "third.log", "host-a")
        assert code is None
    finally:
        fleet.close()

    shared = Fleet(tmp_path / "pg", database_url=postgres_url)
    try:
        for host in ("host-a", "host-b"):
            code, text = _exits(shared, celery_worker_args("mail.msc"), f"{host}.log", host)
            assert code is None, text
    finally:
        shared.close()


def test_a_host_not_seen_for_ten_minutes_has_left(tmp_path: Path) -> None:
    import time

    from worker.store.hosts import SEEN_WITHIN, others

    fleet = Fleet(tmp_path)
    try:
        fleet.redis.hset(keys.FLEET_HOSTS, "gone", repr(time.time() - SEEN_WITHIN - 1))
        fleet.redis.hset(keys.FLEET_HOSTS, "here", repr(time.time()))
        assert others(fleet.redis, fleet.settings) == ["here"]
    finally:
        fleet.close()
