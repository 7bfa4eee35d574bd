"""A ``send()``'s task message made from the first one kombu made (producers/taskmessage.py): the
message kombu would have made, byte for byte but for the task's own values, on real Redis."""

from __future__ import annotations

import json
from typing import Any

import redis

from config import keys
from config.celery import PRIORITY_URGENT
from config.settings import Settings
from producers.client import Dispatcher
from producers.taskmessage import Template
from tests.support.env import SECRET
from tests.support.queue import raw_messages, task_body


def job(i: int) -> dict[str, object]:
    return {
        "owner": "owner-1",
        "identity": "Shop <shop@example.com>",
        "to": [f"user{i}@example.org", "carbon@example.net"],
        "subject": "Your order",
        "text": "Thanks",
        "metadata": {"order": "A-1"},
    }


def jobs_of(envelope: dict[str, Any]) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = task_body(envelope)[0][0]
    return jobs


def shape(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope without what differs from one task to the next: its id, what Flower shows
    of its jobs, kombu's delivery tag, its jobs' ids."""
    headers = {k: v for k, v in envelope["headers"].items() if k not in ("id", "root_id")}
    headers["argsrepr"] = headers["argsrepr"].replace(jobs_of(envelope)[0]["id"], "ID")
    properties = dict(envelope["properties"], correlation_id=None, delivery_tag=None)
    args, kwargs, embed = task_body(envelope)
    body = [[[dict(j, id=None) for j in args[0]]], kwargs, embed]
    return dict(envelope, headers=headers, properties=properties, body=body)


def sender_for(redis_url: str) -> Dispatcher:
    return Dispatcher(Settings(broker_url=redis_url, secret_key=SECRET))  # type: ignore[arg-type]


def waiting(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """The envelopes waiting on mail.msc, by the id of their (one) job."""
    return {jobs_of(e)[0]["id"]: e for e in map(json.loads, raw_messages(client, "mail.msc"))}


def test_a_message_made_from_the_template_is_the_one_kombu_makes(
    redis_url: str, redis_client: redis.Redis
) -> None:
    sender, fresh = sender_for(redis_url), sender_for(redis_url)
    try:
        first = str(sender.send(job(1)))  # kombu makes it: the template
        templated = str(sender.send(job(2)))
        made = sender.publisher._maker
        assert made is not None and isinstance(made[2][(PRIORITY_URGENT, "msc")], Template)
        by_kombu = str(fresh.send(job(2)))  # a dispatcher's first: kombu's, captured
    finally:
        sender.close()
        fresh.close()
    envelopes = waiting(redis_client)
    assert set(envelopes) == {first, templated, by_kombu}
    assert shape(envelopes[templated]) == shape(envelopes[by_kombu])
    # and what differs is its own: the task's id, its job named to Flower, a new delivery tag
    mine, other = envelopes[templated], envelopes[first]
    headers, properties = mine["headers"], mine["properties"]
    assert headers["id"] == headers["root_id"] == properties["correlation_id"]
    assert headers["id"] != other["headers"]["id"]
    assert templated in headers["argsrepr"] and "count=1" in headers["argsrepr"]
    assert properties["delivery_tag"] != other["properties"]["delivery_tag"]
    assert [j["to"] for j in jobs_of(mine)] == [["user2@example.org", "carbon@example.net"]]


def test_a_send_after_redis_forgot_its_scripts_still_records_and_publishes(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # a restarted Redis has no scripts loaded: the script is sent whole once more
    sender = sender_for(redis_url)
    try:
        sender.send(job(1))
        redis_client.script_flush()
        job_id = str(sender.send(job(2)))
    finally:
        sender.close()
    assert redis_client.hget(keys.job(job_id), "state") == b"queued"
    assert job_id in waiting(redis_client)


def test_where_no_template_is_kept_each_message_is_kombus(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # a Celery or kombu whose message the template would not make again (Template.of says so):
    # every message is then made by kombu and captured, as the first one is
    sender = sender_for(redis_url)
    try:
        first = str(sender.send(job(1)))
        made = sender.publisher._maker
        assert made is not None
        made[2][(PRIORITY_URGENT, "msc")] = False
        second = str(sender.send(job(1)))
    finally:
        sender.close()
    envelopes = waiting(redis_client)
    assert set(envelopes) == {first, second}
    assert shape(envelopes[first]) == shape(envelopes[second])
    assert redis_client.hget(keys.job(second), "state") == b"queued"
