"""A ``send()``'s task message on RabbitMQ made from the first one kombu made
(producers/taskmessage.py), published on a producer the publisher keeps: the message kombu would
have published, but for the task's own values; a kept connection that RabbitMQ closed is
replaced, not used again. Real RabbitMQ (a private vhost), job state in real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiormq
import pytest

from config.celery import PRIORITY_URGENT, amqp_priority
from producers.client import Dispatcher
from producers.taskmessage import AmqpTemplate
from tests.support.env import make_settings, worker_env
from tests.support.rabbit import amqp_url, private_vhost, rabbitmqctl

pytestmark = pytest.mark.e2e


def job(to: str) -> dict[str, object]:
    return {
        "owner": "owner-1",
        "identity": "Shop <shop@example.com>",
        "to": [to],
        "subject": "Your order",
        "text": "Thanks",
    }


@pytest.fixture
def vhost() -> Iterator[str]:
    with private_vhost() as name:
        yield name


def sender(vhost: str, redis_url: str, tmp_path: Path) -> Dispatcher:
    env = worker_env(redis_url, f"sqlite:///{tmp_path / 's.db'}", "smtp://127.0.0.1:9")
    env |= {"MAILDISPATCH_BROKER_URL": amqp_url(vhost), "MAILDISPATCH_REDIS_URL": redis_url}
    return Dispatcher(make_settings(env))


async def _waiting(url: str, queue: str) -> dict[str, tuple[dict[str, Any], Any]]:
    """The messages waiting on ``queue`` by their (one) job's id: (properties, body), taken."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        found: dict[str, tuple[dict[str, Any], Any]] = {}
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if message.body == b"" and message.delivery_tag is None:
                return found  # basic.get-empty
            p = message.header.properties
            properties = {
                "content_type": p.content_type,
                "content_encoding": p.content_encoding,
                "delivery_mode": p.delivery_mode,
                "priority": p.priority,
                "correlation_id": p.correlation_id,
                "reply_to": p.reply_to,
                "headers": dict(p.headers or {}),
            }
            body = json.loads(message.body)
            job_id = body[0][0][0]["id"]
            assert job_id not in found, f"{job_id} published twice"
            found[job_id] = (properties, body)
    finally:
        await connection.close()


def shape(properties: dict[str, Any], body: Any) -> tuple[dict[str, Any], Any]:
    """A message without what differs from one task to the next: its id, what Flower shows of
    its jobs, its jobs' ids and recipients."""
    job_id = body[0][0][0]["id"]
    headers = {k: v for k, v in properties["headers"].items() if k not in ("id", "root_id")}
    headers["argsrepr"] = headers["argsrepr"].replace(job_id, "ID")
    args, kwargs, embed = body
    jobs = [{k: v for k, v in j.items() if k not in ("id", "to")} for j in args[0]]
    return dict(properties, correlation_id=None, headers=headers), [[jobs], kwargs, embed]


def test_a_message_made_from_the_template_is_the_one_kombu_makes(
    vhost: str, redis_url: str, tmp_path: Path
) -> None:
    d, fresh = sender(vhost, redis_url, tmp_path), sender(vhost, redis_url, tmp_path)
    try:
        first = str(d.send(job("one@example.org")))  # kombu makes it, published here
        templated = str(d.send(job("two@example.org")))
        assert isinstance(d.publisher._amqp_templates[(PRIORITY_URGENT, "mail.msc")], AmqpTemplate)
        by_kombu = str(fresh.send(job("three@example.org")))  # a publisher's first: kombu's
    finally:
        d.close()
        fresh.close()
    waiting = asyncio.run(_waiting(amqp_url(vhost), "mail.msc"))
    assert set(waiting) == {first, templated, by_kombu}
    assert shape(*waiting[templated]) == shape(*waiting[by_kombu])
    # what differs is its own: the task's id, its job named to Flower, its job
    (mine, body), (other, _) = waiting[templated], waiting[first]
    headers = mine["headers"]
    assert headers["id"] == headers["root_id"] == mine["correlation_id"] != other["correlation_id"]
    assert templated in headers["argsrepr"] and "count=1" in headers["argsrepr"]
    assert [j["to"] for j in body[0][0]] == [["two@example.org"]]
    assert mine["priority"] == amqp_priority(PRIORITY_URGENT) and mine["delivery_mode"] == 2


def test_a_kept_connection_closed_by_rabbitmq_is_replaced(
    vhost: str, redis_url: str, tmp_path: Path
) -> None:
    # RabbitMQ closes every connection of the vhost between two sends: the publisher's kept
    # producer fails on its next publish, is dropped, and the retry publishes on a new one
    d = sender(vhost, redis_url, tmp_path)
    try:
        before = [str(d.send(job(f"b{i}@example.org"))) for i in range(3)]
        assert len(d.publisher._kept) == 1
        rabbitmqctl("close_all_connections", "-p", vhost, "maildispatch test: cut")
        after = [str(d.send(job(f"a{i}@example.org"))) for i in range(3)]
        assert len(d.publisher._kept) == 1
        states = {(d.status(i) or {}).get("state") for i in before + after}
    finally:
        d.close()
    assert states == {"queued"}
    assert set(asyncio.run(_waiting(amqp_url(vhost), "mail.msc"))) == set(before + after)
