"""The dead-letter store of bounce reports with a real prefork ``bounces`` worker.

An ingest is made to overrun for real: the test holds an exclusive lock on the Failed Sends table
of a PostgreSQL schema, so the worker's write waits until the task's time limit stops it. The
report is then in the store (``maildispatch bounces dead list --json``), ``dead retry`` queues it
again once the lock is gone and it becomes a Failed Send row, ``dead drop`` removes an entry.
A run killed by the hard limit is swept into the store by ``dead list``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from config import keys
from config.celery import BOUNCE_TASK, QUEUE, make_celery
from tests.integration.test_bounces_ingest import DOMAIN, sent_job
from tests.support.bounces import render
from tests.support.env import make_settings, worker_env
from tests.support.services import REPO, background, celery_worker_args, wait_for
from worker.bounces.intake.enqueue import BouncePublisher, InboundMessage
from worker.store import repo
from worker.store.db import Store

DEAD = keys.BOUNCE_DEAD_INDEX
DEADLINES = keys.BOUNCE_INGESTING_DEADLINES


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    """A throwaway PostgreSQL schema (the worker and the test share it)."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = Store(postgres_url, migrate=False)
    with admin.engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    store = Store(f"{postgres_url}?options=-csearch_path%3D{schema}")
    yield store
    store.dispose()
    with admin.engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def bounces_env(redis_url: str, store: Store, **limits: str) -> dict[str, str]:
    env = worker_env(redis_url, store.url, "smtp://127.0.0.1:9")
    env["MAILDISPATCH_BOUNCE_DOMAIN"] = DOMAIN
    for name, value in limits.items():
        env[f"MAILDISPATCH_BOUNCE_INGEST_{name.upper()}"] = value
    return env


@contextmanager
def bounces_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The Procfile's ``bounces`` line (``-P prefork``: time limits need it), one process."""
    args = [*celery_worker_args("mail.bounces", concurrency=1, pool="prefork")]
    args += ["--prefetch-multiplier=1"]
    with background(args, env, log) as proc:
        wait_for(lambda: "ready" in log.read_text(errors="replace"), 60, 0.1, "bounces worker")
        assert "(prefork)" in log.read_text()  # not the app's default solo pool
        yield proc


def pool_children(proc: subprocess.Popen[bytes]) -> list[int]:
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return [int(c) for c in children]


@contextmanager
def table_locked(store: Store) -> Iterator[None]:
    """Every write to failed_sends waits while this is held."""
    with store.engine.connect() as conn:
        conn.execute(text("LOCK TABLE failed_sends IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", "bounces", "dead", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


def dead_list(env: dict[str, str]) -> list[dict[str, object]]:
    out = cli(env, "list", "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def rows(store: Store, job_id: str) -> list[tuple[str, str]]:
    with store.session() as s:
        return [(r.recipient, r.reason) for r in repo.failed_sends_for_job(s, job_id)]


def publish_bounce(env: dict[str, str], client: redis.Redis, to: str) -> str:
    """A genuine bounce for a sent job to ``to``, through the real publisher; returns the job id."""
    job_id, rp = sent_job(client, [to])
    raw = render("postfix-userunknown", RETURN_PATH=rp, RECIPIENT=to)
    publisher = BouncePublisher(make_settings(env))
    try:
        publisher.publish(InboundMessage(raw=raw, source="smtp", rcpt_tos=(rp,)))
    finally:
        publisher.close()
    return job_id


def test_overrun_ingest_is_kept_listed_retried_into_a_row_and_dropped(
    redis_url: str, redis_client: redis.Redis, pg_store: Store, tmp_path: Path
) -> None:
    env = bounces_env(redis_url, pg_store, soft_time_limit="1s", time_limit="20s")
    log = tmp_path / "worker.log"
    with bounces_worker(env, log):
        with table_locked(pg_store):
            job_id = publish_bounce(env, redis_client, "gone@example.org")
            wait_for(lambda: redis_client.zcard(DEAD), 15, 0.1, "the report in the dead letters")
        [entry] = dead_list(env)
        assert entry["why"] == "time_limit" and entry["retryable"] is True
        assert entry["source"] == "smtp" and int(str(entry["size"])) > 1000
        assert "bounce_ingest_time_limit" in log.read_text()
        assert rows(pg_store, job_id) == []
        assert redis_client.hlen(keys.BOUNCE_INGESTING) == 0  # the run's note was cleared

        out = cli(env, "retry", str(entry["id"]))
        assert out.returncode == 0, out.stderr
        assert f"{entry['id']} queued as " in out.stdout
        wait_for(lambda: rows(pg_store, job_id), 15, 0.2, "the Failed Send row")
        assert rows(pg_store, job_id) == [("gone@example.org", "userunknown")]
        assert dead_list(env) == []

        # a payload no ingest can read is kept too; retry says so, drop removes it
        celery = make_celery(make_settings(env), "test")
        celery.send_task(BOUNCE_TASK, args=({"v": 1, "source": "smtp"},), queue=QUEUE["bounces"])
        celery.close()
        wait_for(lambda: redis_client.zcard(DEAD), 15, 0.1, "the payload in the dead letters")
        [poison] = dead_list(env)
        assert poison["why"] == "invalid_payload" and poison["retryable"] is False
        out = cli(env, "retry", str(poison["id"]))
        assert out.returncode == 1 and "no message to ingest" in out.stderr
        assert len(dead_list(env)) == 1
        assert cli(env, "drop", str(poison["id"])).returncode == 0
        assert dead_list(env) == []
        out = cli(env, "drop", str(poison["id"]))
        assert out.returncode == 1 and "no dead letter" in out.stderr
    counters = {k.decode(): int(v) for k, v in redis_client.hgetall("md:counters").items()}
    assert counters["bounces_dead_time_limit"] == 1
    assert counters["bounces_dead_invalid_payload"] == 1


def test_run_killed_by_the_hard_limit_is_swept_into_the_store(
    redis_url: str, redis_client: redis.Redis, pg_store: Store, tmp_path: Path
) -> None:
    """A run stuck where the soft limit cannot reach it (here: its process stopped) is killed by
    the pool at the hard limit and cannot say so; ``dead list`` then sweeps its note in."""
    env = bounces_env(redis_url, pg_store, soft_time_limit="1s", time_limit="3s")
    log = tmp_path / "worker.log"
    with bounces_worker(env, log) as worker:
        [child] = pool_children(worker)
        with table_locked(pg_store):
            began = time.time()
            job_id = publish_bounce(env, redis_client, "killed@example.org")
            wait_for(lambda: redis_client.hlen(keys.BOUNCE_INGESTING), 10, 0.05, "the run")
            os.kill(child, signal.SIGSTOP)  # deaf to the soft limit's signal
            wait_for(lambda: "Hard time limit" in log.read_text(), 15, 0.2, "the hard limit")
        assert redis_client.hlen(keys.BOUNCE_INGESTING) == 1  # nobody could say it died
        assert dead_list(env) == []  # within its margin (5 s here) it is not taken for dead
        [(_, deadline)] = redis_client.zrange(DEADLINES, 0, -1, withscores=True)
        assert deadline - began <= 3 + 5 + 1  # the hard limit plus its margin
        time.sleep(max(0.0, deadline - time.time()) + 0.1)
        [entry] = dead_list(env)  # swept in by the listing
        assert entry["why"] == "time_limit_killed" and entry["retryable"] is True
        assert redis_client.hlen(keys.BOUNCE_INGESTING) == 0
        assert rows(pg_store, job_id) == []
        # the pool started a new process: the report, queued again, is ingested
        assert cli(env, "retry", str(entry["id"])).returncode == 0
        wait_for(lambda: rows(pg_store, job_id), 15, 0.2, "the Failed Send row")
        assert rows(pg_store, job_id) == [("killed@example.org", "userunknown")]
        assert child not in pool_children(worker)


def test_a_report_with_no_failed_recipient_found_is_kept_for_a_person(
    redis_url: str, redis_client: redis.Redis, pg_store: Store, tmp_path: Path
) -> None:
    """A failure report for one of our jobs whose text names no recipient the parser can find
    is kept in the dead letters (why ``unrecognized``) and counted, not silently dropped."""
    env = bounces_env(redis_url, pg_store)
    job_id, rp = sent_job(redis_client, ["who@example.org"])
    raw = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\nTo: " + rp.encode()
        + b"\r\nSubject: Undeliverable message\r\n\r\n"
        + b"Your message could not be delivered. Please contact your administrator.\r\n"
    )  # fmt: skip
    with bounces_worker(env, tmp_path / "worker.log"):
        publisher = BouncePublisher(make_settings(env))
        try:
            publisher.publish(InboundMessage(raw=raw, source="smtp", rcpt_tos=(rp,)))
        finally:
            publisher.close()
        wait_for(lambda: redis_client.zcard(DEAD), 15, 0.1, "the report in the dead letters")
    [entry] = dead_list(env)
    assert entry["why"] == "unrecognized"
    assert int(redis_client.hget("md:counters", "bounces_unrecognized") or 0) >= 1
    assert rows(pg_store, job_id) == []


def test_the_same_report_kept_again_is_one_entry(redis_client: redis.Redis) -> None:
    # a sender retrying after a time-out, a loop, or a flood of one message: one entry, counted
    from worker.bounces.intake.deadletter import DeadLetters

    dead = DeadLetters(redis_client)
    wire = {"raw": "Subject: junk\r\n\r\n" + "x" * 200_000, "source": "smtp", "size": 200_017}
    first = {dead.add(wire, "unrecognized") for _ in range(20)}
    other = dead.add(wire | {"raw": wire["raw"] + "y"}, "unrecognized")
    assert len(first) == 1 and other not in first
    assert [e["id"] for e in dead.entries()] == [*first, other]
    assert redis_client.hlen(keys.BOUNCE_DEAD_WIRE) == 2
    assert int(redis_client.hget(keys.COUNTERS, "bounces_dead_repeated") or 0) == 19
    assert dead.get(other) is not None and dead.drop(other)
