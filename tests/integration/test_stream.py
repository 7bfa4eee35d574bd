"""A worker holds many task messages at once: single sends are delivered concurrently, the
urgent lane is taken first, and the messages' unacked copies are kombu's."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import redis

from producers.client import Dispatcher
from tests.conftest import Fleet, make_settings, worker_env
from tests.support.redis_server import RedisServer
from tests.support.relay import Relay
from tests.support.services import wait_for

FINAL = {"sent", "failed", "suppressed", "bounced"}


def job(to: str) -> dict[str, object]:
    return {
        "owner": "acme",
        "identity": "Acme <support@acme.example>",
        "to": [to],
        "subject": "Hi",
        "text": "Body\n",
    }


def test_single_sends_are_delivered_concurrently_by_one_worker(fleet: Fleet, relay: Relay) -> None:
    # one solo worker process; the relay takes a second per message. One message at a time
    # would need 16 s; a worker holding many delivers them together.
    relay.handler.delay = 1.0
    d = Dispatcher(fleet.settings)
    try:
        started = time.monotonic()
        ids = [d.send(job(f"single{i}-{uuid.uuid4().hex[:6]}@example.org")) for i in range(16)]
        wait_for(
            lambda: all((d.status(i) or {}).get("state") in FINAL for i in ids),
            30,
            what="single sends delivered",
        )
        elapsed = time.monotonic() - started
        assert {(d.status(i) or {}).get("state") for i in ids} == {"sent"}
        assert elapsed < 8, f"16 single sends took {elapsed:.1f}s: delivered one at a time?"
        counts = relay.handler.by_message_id()
        assert all(counts[f"<{i}@mail.operator.test>"] == 1 for i in ids)
    finally:
        relay.handler.delay = 0.0
        d.close()
    # every message was acknowledged: nothing left in kombu's unacked hash
    assert fleet.redis.hlen("unacked") == 0


def test_one_job_calls_take_the_urgent_lane(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        env = worker_env(server.url, f"sqlite:///{tmp_path / 's.db'}", "smtp://127.0.0.1:9")
        d = Dispatcher(make_settings(env))
        client = redis.Redis.from_url(server.url)
        try:
            d.send(job("one@example.org"))
            d.send_many([job("a@example.org"), job("b@example.org")])
            # kombu's Redis transport: priority 0 is the queue's own list, 9 its own list
            assert client.llen("mail.msc") == 1
            assert client.llen("mail.msc\x06\x169") == 1
        finally:
            d.close()
            client.close()
    finally:
        server.stop()
