"""Flower against a live worker: tasks appear by their readable names, with their outcomes and
retries, and nothing of a message (recipient, subject, body) or a secret shows."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from config.celery import make_celery
from config.settings import Settings
from producers.client import Dispatcher
from tests.support.env import SECRET, make_settings
from tests.support.fleet import Fleet
from tests.support.relay import Relay
from tests.support.services import (
    REPO,
    background,
    celery_worker_args,
    free_port,
    wait_for,
)

AUTH = ("ops", "flower-pw-123")


def flower_args(port: int) -> list[str]:
    """The Procfile's flower command."""
    return [sys.executable, "-m", "producers.cli", "flower", "--port", str(port)]


@pytest.fixture
def flower(fleet: Fleet, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = fleet.env | {"MAILDISPATCH_FLOWER_BASIC_AUTH": ":".join(AUTH)}
    log = tmp_path / "flower.log"
    with background(flower_args(port), env, log) as proc:

        def up() -> bool:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                return httpx.get(f"{url}/api/workers", auth=AUTH, timeout=3).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, 0.3, "Flower to answer")
        yield url


def flower_tasks(url: str, name: str) -> dict[str, dict[str, Any]]:
    tasks = httpx.get(f"{url}/api/tasks", params={"taskname": name}, auth=AUTH, timeout=10)
    assert tasks.status_code == 200, tasks.text
    return dict(tasks.json())


def job(to: str, **extra: Any) -> dict[str, Any]:
    return {
        "owner": "flower-owner",
        "identity": "Private Person <private.person@acme.example>",
        "to": [to],
        "cc": ["carbon.copy@example.net"],
        "subject": "Confidential subject line",
        "text": "The body says body-marker-7731 and nothing else",
    } | extra


def assert_no_content(dump: str) -> None:
    for secret in (
        "private.person@acme.example",
        "carbon.copy@example.net",
        "reject-ghost@example.org",
        "defer1-later@example.org",
        "happy.user@example.org",
        "Confidential subject line",
        "body-marker-7731",
        SECRET,
        AUTH[1],
    ):
        assert secret not in dump, f"{secret!r} shows in Flower"


def test_flower_shows_delivery_tasks_by_name_without_content(
    fleet: Fleet, relay: Relay, flower: str
) -> None:
    assert httpx.get(f"{flower}/api/tasks", timeout=5).status_code == 401  # basic auth is on
    d = Dispatcher(fleet.settings)
    ids = d.send_many(
        [job("happy.user@example.org"), job("reject-ghost@example.org", cc=[])]  # one batch
    )
    (retried,) = d.send_many([job("defer1-later@example.org")])  # 451, then the scheduler resends
    d.close()
    wanted = {str(i) for i in [*ids, retried]}

    def seen() -> dict[str, dict[str, Any]] | None:
        tasks = flower_tasks(flower, "maildispatch.deliver.msc")
        done = [t for t in tasks.values() if t.get("state") == "SUCCESS"]
        shown = " ".join(str(t.get("args")) for t in done)
        return tasks if len(done) >= 3 and all(i[:8] in shown for i in wanted) else None

    wait_for(seen, 60, 0.5, "Flower to show the three delivery tasks")
    tasks = seen()
    assert tasks is not None
    results = [str(t.get("result")) for t in tasks.values()]
    assert any("'failed': 1" in r for r in results)  # the rejection, counted in the batch
    assert any("'retrying': 1" in r for r in results)  # the 451
    assert all(t["name"] == "maildispatch.deliver.msc" for t in tasks.values())
    for t in tasks.values():
        assert "channel=msc" in str(t["args"]) and t["kwargs"] in ("{}", {})
    assert_no_content(json.dumps(tasks))
    workers = httpx.get(f"{flower}/api/workers", auth=AUTH, timeout=10).text
    assert_no_content(workers)


def test_a_process_that_sends_and_exits_at_once_still_announces_the_task(
    fleet: Fleet, relay: Relay
) -> None:
    # task-sent events wait in the producer's buffer (up to 0.1 s): a script that sends one
    # email with the module-level send() and exits, without closing anything, publishes them
    # as it exits
    code = (
        "from producers import send; "
        "print(send({'owner': 'acme', 'identity': 'Acme <support@acme.example>', "
        "'to': ['quick.exit@example.org'], 'subject': 'Hi', 'text': 'Body'}))"
    )
    with task_events(fleet.settings) as events:
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=fleet.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        job_id = out.stdout.strip()
        wait_for(
            lambda: any(e["type"] == "task-sent" and job_id in str(e.get("args")) for e in events),
            30,
            0.1,
            "the exited producer's task-sent event",
        )


@contextmanager
def task_events(settings: Settings) -> Iterator[list[dict[str, Any]]]:
    """Every task event on the bus while the block runs: what Flower (or anyone) receives."""
    events: list[dict[str, Any]] = []
    stop = threading.Event()
    app = make_celery(settings, "event-tap")

    def tap() -> None:
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": events.append})
            while not stop.is_set():
                with contextlib.suppress(TimeoutError, socket.timeout):
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)

    thread = threading.Thread(target=tap, daemon=True)
    thread.start()
    # the receiver listens once it hears an event of the test's own (a fixed sleep was not
    # always enough for its subscription to be in place)
    with app.events.default_dispatcher() as probe:

        def heard() -> bool:
            probe.send("tap-probe")
            return any(e["type"] == "tap-probe" for e in events)

        wait_for(heard, 30, 0.2, "the event tap to listen")
    try:
        yield events
    finally:
        stop.set()
        thread.join(10)


def test_single_sends_are_announced_as_sent_with_ids_only(fleet: Fleet, relay: Relay) -> None:
    # one send(): its queued state and its task message are written in one script; the
    # task-sent event Celery makes for it follows in a list (producers/publishing.py,
    # SentEvents); the worker's events follow as for any batch. The second send of a
    # dispatcher has its message and event made from the first's (producers/taskmessage.py)
    with task_events(fleet.settings) as events:
        d = Dispatcher(fleet.settings)
        job_ids = [str(d.send(job(f"happy.user{i}@example.org"))) for i in range(2)]
        d.close()

        def of_the_job(kind: str, job_id: str) -> list[dict[str, Any]]:
            return [e for e in events if e["type"] == kind and job_id in str(e.get("args"))]

        wait_for(
            lambda: all(of_the_job("task-sent", i) for i in job_ids), 30, 0.1, "task-sent events"
        )
        sent_events = [e for i in job_ids for e in of_the_job("task-sent", i)]
        wait_for(
            lambda: (
                {e["uuid"] for e in events if e["type"] == "task-succeeded"}
                >= {e["uuid"] for e in sent_events}
            ),
            60,
            0.1,
            "the tasks to succeed",
        )
    assert len({e["uuid"] for e in sent_events}) == 2
    for sent in sent_events:
        assert sent["name"] == "maildispatch.deliver.msc" and sent["queue"] == "mail.msc"
        assert sent["root_id"] == sent["uuid"] and "count=1" in sent["args"]
    # delivered once to each recipient (MSC: one transaction per recipient's return path)
    assert sorted(r for m in relay.handler.messages for r in m.rcpt_tos) == [
        "carbon.copy@example.net",
        "carbon.copy@example.net",
        "happy.user0@example.org",
        "happy.user1@example.org",
    ]
    assert_no_content(json.dumps(events, default=str))


def test_a_batch_that_crashes_shows_as_retrying_without_content(
    fleet: Fleet, flower: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # a worker whose database is unreachable: every batch crashes and is handed back, retried
    env = fleet.env | {"MAILDISPATCH_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/x"}
    log = tmp_path / "broken-worker.log"
    with (
        background(celery_worker_args("mail.smtp"), env, log),
        task_events(fleet.settings) as events,
    ):
        wait_for(lambda: "ready" in log.read_text(errors="replace"), 60, what="worker ready")
        d = Dispatcher(make_settings(env))
        (job_id,) = d.send_many([job("happy.user@example.org", channel="smtp")])
        d.close()

        def retried() -> list[dict[str, Any]]:
            tasks = flower_tasks(flower, "maildispatch.deliver.smtp").values()
            return [t for t in tasks if t.get("retries", 0) >= 1 or t.get("state") == "RETRY"]

        wait_for(retried, 90, 0.5, "Flower to show the retried batch")
    tasks = flower_tasks(flower, "maildispatch.deliver.smtp")
    assert any(str(job_id)[:8] in str(t["args"]) for t in tasks.values())
    assert_no_content(json.dumps(tasks))
    # the crash is reported to Flower as a retry (the message goes back to the broker after
    # its backoff, and is taken again)
    assert any(e["type"] == "task-retried" for e in events)
    assert_no_content(json.dumps(events, default=str))


def test_flower_refuses_to_run_without_a_password(fleet: Fleet) -> None:
    env = {k: v for k, v in fleet.env.items() if k != "MAILDISPATCH_FLOWER_BASIC_AUTH"}
    out = subprocess.run(
        flower_args(free_port()), env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 78 and "MAILDISPATCH_FLOWER_BASIC_AUTH" in out.stderr
