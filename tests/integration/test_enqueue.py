"""Enqueueing against real Redis: batches, idempotency, and nothing enqueued from bad input."""

from __future__ import annotations

import json

import pytest
import redis

from config.settings import Settings
from producers.client import Dispatcher, InvalidJobs
from tests.conftest import SECRET
from tests.support.queue import task_body


@pytest.fixture
def dispatcher(redis_url: str, redis_client: redis.Redis) -> Dispatcher:
    d = Dispatcher(Settings(broker_url=redis_url, secret_key=SECRET, batch_size=50))  # type: ignore[arg-type]
    yield d  # type: ignore[misc]
    d.close()


def job(i: int, **overrides: object) -> dict[str, object]:
    return {
        "owner": f"owner-{i % 3}",
        "identity": "Shop <shop@example.com>",
        "to": [f"user{i}@example.org"],
        "subject": f"Order {i}",
        "text": "Thanks",
    } | overrides


def queued_jobs(client: redis.Redis, queue: str = "mail.msc") -> list[list[dict[str, object]]]:
    """The batches waiting on a queue (kombu's Redis list), decoded."""
    return [task_body(raw)[0][0] for raw in client.lrange(queue, 0, -1)]


def test_send_many_publishes_full_batches(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    ids = dispatcher.send_many([job(i, channel="msc") for i in range(120)])
    batches = queued_jobs(redis_client)
    assert sorted(len(b) for b in batches) == [20, 50, 50]
    assert {j["id"] for b in batches for j in b} == {str(i) for i in ids}
    state = dispatcher.status(ids[0])
    assert state is not None and state["state"] == "queued" and state["owner"] == "owner-0"
    # the task body is JSON text inside kombu's envelope, not base64 (a third smaller)
    envelope = json.loads(redis_client.lindex("mail.msc", 0))
    assert envelope["properties"]["body_encoding"] is None and envelope["body"].startswith("[[[{")


def test_send_is_a_batch_of_one_published_at_once(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    job_id = dispatcher.send(job(1))
    (batch,) = queued_jobs(redis_client)
    assert [j["id"] for j in batch] == [str(job_id)]
    assert batch[0]["channel"] == "msc"  # no channel named: the owner's preference, msc by default


def test_task_message_shows_no_content(dispatcher: Dispatcher, redis_client: redis.Redis) -> None:
    dispatcher.send(job(1, subject="Secret subject", text="Secret body"))
    envelope = json.loads(redis_client.lindex("mail.msc", 0))
    headers = envelope["headers"]
    assert headers["task"] == "maildispatch.deliver.msc"
    shown = headers["argsrepr"] + headers["kwargsrepr"]
    assert "count=1" in shown and "channel=msc" in shown
    assert "user1@example.org" not in shown and "Secret" not in shown


def test_invalid_jobs_enqueue_nothing(dispatcher: Dispatcher, redis_client: redis.Redis) -> None:
    jobs = [job(i) for i in range(10)]
    jobs[3] = job(3, subject="x\r\nBcc: a@b.c")
    jobs[7] = job(7, to=["nope"])
    with pytest.raises(InvalidJobs) as info:
        dispatcher.send_many(jobs)
    assert [e.index for e in info.value.errors] == [3, 7]
    assert redis_client.llen("mail.msc") == 0
    assert redis_client.keys("md:job:*") == []


def test_idempotency_key_makes_one_job(dispatcher: Dispatcher, redis_client: redis.Redis) -> None:
    first = dispatcher.send(job(1, idempotency_key="order-1"))
    second = dispatcher.send(job(1, idempotency_key="order-1"))
    other_owner = dispatcher.send(job(2, idempotency_key="order-1"))
    assert first == second != other_owner
    assert redis_client.llen("mail.msc") == 2


def test_oversize_job_is_refused(redis_url: str, redis_client: redis.Redis) -> None:
    d = Dispatcher(Settings(broker_url=redis_url, secret_key=SECRET, max_message_bytes=10_000))  # type: ignore[arg-type]
    with pytest.raises(InvalidJobs, match="larger than"):
        d.send_many([job(1, text="x" * 20_000)])
    d.close()
    assert redis_client.llen("mail.msc") == 0


def test_dispatcher_refuses_to_start_without_secret(redis_url: str) -> None:
    from config.settings import ConfigurationError

    with pytest.raises(ConfigurationError):
        Dispatcher(Settings(broker_url=redis_url, secret_key=None))
