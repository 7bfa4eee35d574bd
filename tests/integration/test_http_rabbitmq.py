"""/healthz and queue depth on /metrics with RabbitMQ as the broker (a private vhost)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from producers.client import Dispatcher
from tests.support.api import serve
from tests.support.env import SECRET
from tests.support.rabbit import amqp_url, private_vhost
from worker.api.app import create_app

pytestmark = pytest.mark.e2e


def test_queue_depth_and_health_on_rabbitmq(
    redis_client: redis.Redis, redis_url: str, tmp_path: Any
) -> None:
    with private_vhost() as vhost:
        settings = Settings(
            broker_url=amqp_url(vhost),
            redis_url=redis_url,
            database_url=f"sqlite:///{tmp_path / 'store.db'}",
            secret_key=SECRET,
            _env_file=None,  # type: ignore[call-arg]
        )
        d = Dispatcher(settings)
        job = {
            "owner": "rabbit-owner",
            "identity": "a@acme.example",
            "to": ["b@example.org"],
            "subject": "Hi",
            "text": "Hello",
            "channel": "gmail",
        }
        d.send_many([job, job | {"to": ["c@example.org"]}, job | {"owner": "other"}])
        # a batch of more than BIG_BATCH jobs waits in its channel's batch queue, counted with
        # the channel's queue; a small one in the channel's queue
        d.send_many([job | {"channel": "msc", "to": [f"r{i}@example.org"]} for i in range(40)])
        d.send_many([job | {"channel": "msc", "to": [f"s{i}@example.org"]} for i in range(3)])
        d.close()
        with serve(create_app(settings)) as url:
            health = httpx.get(f"{url}/healthz", timeout=30)
            text = httpx.get(f"{url}/metrics", timeout=30).text
    assert health.status_code == 200 and health.json()["checks"]["broker"] == "ok"
    depth = {
        s.labels["queue"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "maildispatch_queue_messages"
    }
    # gmail batches are grouped per owner: two messages; queues nobody declared yet count 0
    assert depth == {
        "mail.gmail": 2,
        "mail.msc": 2,
        "mail.smtp": 0,
        "mail.bounces": 0,
        "mail.events": 0,
    }
    assert "maildispatch_unacked_messages" not in text  # a Redis-broker figure only
