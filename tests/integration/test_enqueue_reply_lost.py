"""The one-script enqueue (states + task message, QUEUED) whose reply is lost after
Redis ran it. Real private Redis (state and broker, the default deployment); the lost reply is
injected in producers.publishing.exchange: the real script runs, then the connection "resets".
A worker is emulated with the worker's own claim script (worker/jobs/lua/claim.lua) and a
`sent` record, as the real worker would do while the producer waits to retry."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

import producers.publishing as publishing
from config import keys
from config.lua import lua_script
from config.settings import Settings
from producers.client import Dispatcher, EnqueueFailed, JobIdTaken
from tests.support.env import SECRET
from tests.support.redis_server import RedisServer

CLAIM = lua_script("worker.jobs", "claim")


@pytest.fixture
def server(tmp_path: Path):
    s = RedisServer(tmp_path / "r").start()
    yield s
    s.stop()


def make(server: RedisServer, retry_for: float) -> Dispatcher:
    return Dispatcher(
        Settings(
            broker_url=server.url,
            redis_url=server.url,
            secret_key=SECRET,  # type: ignore[arg-type]
            enqueue_retry_for=retry_for,
            _env_file=None,  # type: ignore[call-arg]
        )
    )


def job(**extra: object) -> dict[str, object]:
    return {
        "owner": "acme",
        "channel": "msc",
        "identity": "Acme <news@acme.example>",
        "to": ["reader@example.org"],
        "subject": "Hi",
        "text": "Hello",
    } | extra


def worker_claims_and_sends(client: redis.Redis, job_id: str) -> str:
    """What a worker does with the task: claim (the real script), deliver, record `sent`."""
    reply = client.eval(CLAIM, 1, keys.job(job_id), time.time(), 60, 3600, "acme", "msc", "", "")
    decision = reply[0].decode()
    if decision in ("go", "uncertain"):
        client.hset(keys.job(job_id), "state", "sent")
    return decision


def test_retry_after_lost_reply_requeues_a_job_a_worker_already_sent(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis.from_url(server.url)
    d = make(server, retry_for=5.0)
    real = publishing.exchange
    calls: list[int] = []
    job_id = str(uuid.uuid4())

    def lost_reply(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)  # (a first EVALSHA may answer NOSCRIPT: then EVAL)
        calls.append(1)
        if len(calls) == 1:  # Redis ran the script; the reply is lost (connection reset)
            assert worker_claims_and_sends(client, job_id) == "go"  # a worker took it at once
            raise redis.ConnectionError("Connection reset by peer")
        return out

    monkeypatch.setattr(publishing, "exchange", lost_reply)
    assert str(d.send(job(id=job_id))) == job_id
    assert len(calls) == 2  # the script was sent again
    state = client.hgetall(keys.job(job_id))
    tasks = sum(client.llen(k) for k in client.keys("mail.msc*") if client.type(k) == b"list")
    # the job was delivered: its state must stay `sent`, and no copy may be claimable again
    again = worker_claims_and_sends(client, job_id)
    assert state[b"state"] == b"sent" and again == "done" and tasks == 1, (state, again, tasks)
    d.close()


def test_a_job_a_worker_sent_is_reported_not_enqueued_and_accepted_again(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis.from_url(server.url)
    d = make(server, retry_for=0.5)
    real = publishing.exchange
    calls: list[int] = []
    job_id = str(uuid.uuid4())

    def lost_then_away(*args: Any, **kwargs: Any) -> Any:
        if not calls:  # Redis runs the script; the reply is lost, then Redis is away
            real(*args, **kwargs)  # (a first EVALSHA may answer NOSCRIPT: then EVAL)
            calls.append(1)
            assert worker_claims_and_sends(client, job_id) == "go"
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(publishing, "exchange", lost_then_away)
    with pytest.raises(EnqueueFailed) as caught:
        d.send(job(id=job_id))
    monkeypatch.setattr(publishing, "exchange", real)
    state = client.hget(keys.job(job_id), "state")
    print("not_enqueued:", caught.value.not_enqueued, "state:", state)
    # the caller is told the job is not enqueued ... while it was delivered
    delivered_but_reported_lost = uuid.UUID(job_id) in caught.value.not_enqueued
    # ... and sending it again (as the README invites) is accepted: a second delivery
    try:
        resent = str(d.send(job(id=job_id)))
    except JobIdTaken:  # the right answer: the id is the delivered job's
        resent = "refused (JobIdTaken)"
    second = worker_claims_and_sends(client, job_id)
    assert not delivered_but_reported_lost and state == b"sent" and second == "done", (
        caught.value.not_enqueued,
        state,
        resent,
        second,
    )
    d.close()
