"""A job belongs to its owner for life, and keys name one thing (issue #14, items 1 and 10).

Real Redis, a real HTTP server and the real CLI: a job id that exists is refused whoever sends
it, atomically (no race between the check and the write), in single sends, batches (naming
exactly which jobs), and within one batch; idempotency keys keep answering the first job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import keys
from config.settings import ConfigurationError, Settings
from producers.client import Dispatcher, JobIdsTaken, JobIdTaken
from producers.job import InvalidJob
from tests.integration.test_http_api import Api, api  # noqa: F401 (the fixture)
from tests.support.api import bearer
from tests.support.env import SECRET
from tests.support.queue import depth, raw_messages, task_body


@pytest.fixture
def dispatcher(redis_url: str, redis_client: redis.Redis) -> Iterator[Dispatcher]:
    d = Dispatcher(Settings(broker_url=redis_url, secret_key=SECRET, batch_size=50))  # type: ignore[arg-type]
    yield d
    d.close()


def job(owner: str = "victim", **overrides: Any) -> dict[str, Any]:
    return {
        "owner": owner,
        "identity": "Shop <shop@example.com>",
        "to": ["bob@example.org"],
        "subject": "Your order",
        "text": "Thanks",
    } | overrides


def queued_ids(client: redis.Redis) -> list[str]:
    return [j["id"] for raw in raw_messages(client, "mail.msc") for j in task_body(raw)[0][0]]


def test_an_existing_id_is_refused_and_its_owner_never_changes(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    job_id = dispatcher.send(job(subject="secret invoice"))
    before = redis_client.hgetall(keys.job(str(job_id)))
    # the id is in every delivered Message-ID: any recipient knows it
    for owner in ("attacker", "victim"):  # the owner itself cannot reuse it either
        with pytest.raises(JobIdTaken, match=str(job_id)) as caught:
            dispatcher.send(job(owner, id=str(job_id), subject="takeover"))
        assert isinstance(caught.value, InvalidJob) and caught.value.errors[0].field == "id"
    assert redis_client.hgetall(keys.job(str(job_id))) == before
    assert dispatcher.status(job_id)["owner"] == "victim"  # type: ignore[index]
    assert queued_ids(redis_client) == [str(job_id)]
    # a cancel by the victim still works: the job is still theirs
    assert dispatcher.cancel(job_id) == "cancelled"


def test_a_batch_with_a_taken_id_names_it_and_enqueues_nothing(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    existing = dispatcher.send(job())
    # 2,500 jobs: three chunks of queued states, the taken id in the last one, a duplicate in
    # the middle one; the states recorded for the first chunks are undone
    jobs = [job("attacker", to=[f"u{i}@example.org"]) for i in range(2500)]
    repeated = str(uuid.uuid4())
    jobs[5]["id"] = repeated
    jobs[1500]["id"] = repeated
    jobs[2400]["id"] = str(existing)
    with pytest.raises(JobIdsTaken) as caught:
        dispatcher.send_many(jobs)
    assert [(e.index, e.job_id) for e in caught.value.errors] == [
        (1500, repeated),
        (2400, str(existing)),
    ]
    assert "job 5 of this call" in str(caught.value.errors[0])
    assert caught.value.job_ids == [repeated, str(existing)]
    assert queued_ids(redis_client) == [str(existing)]
    assert [k for k in redis_client.scan_iter("md:*:job:*")] == [keys.job(str(existing)).encode()]
    assert dispatcher.status(existing)["owner"] == "victim"  # type: ignore[index]


def test_only_one_of_concurrent_sends_of_one_id_wins(
    redis_url: str, redis_client: redis.Redis
) -> None:
    job_id = str(uuid.uuid4())
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def send(n: int) -> None:
        d = Dispatcher(Settings(broker_url=redis_url, secret_key=SECRET))  # type: ignore[arg-type]
        start.wait()
        try:
            d.send(job(f"owner-{n}", id=job_id))
            outcomes.append(f"owner-{n}")
        except JobIdTaken:
            outcomes.append("taken")
        finally:
            d.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [o for o in outcomes if o != "taken"]
    assert len(outcomes) == 8 and len(winners) == 1
    assert redis_client.hget(keys.job(job_id), "owner") == winners[0].encode()
    assert queued_ids(redis_client) == [job_id]


def test_a_retried_idempotent_call_is_answered_not_refused(dispatcher: Dispatcher) -> None:
    job_id = str(uuid.uuid4())
    first = dispatcher.send(job(id=job_id, idempotency_key="order-1"))
    assert dispatcher.send(job(id=job_id, idempotency_key="order-1")) == first
    again = dispatcher.send_many([job(id=job_id, idempotency_key="order-1"), job()])
    assert again[0] == first
    # the same id under another key is another job: refused
    with pytest.raises(JobIdTaken):
        dispatcher.send(job(id=job_id, idempotency_key="order-2"))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_taken_ids_are_exactly_the_existing_and_repeated_ones(
    dispatcher: Dispatcher, redis_client: redis.Redis, data: st.DataObject
) -> None:
    redis_client.flushdb()
    pool = [str(uuid.UUID(int=n + 1)) for n in range(8)]
    existing = data.draw(st.sets(st.sampled_from(pool), max_size=3), "existing")
    if existing:
        dispatcher.send_many([job("first", id=i) for i in sorted(existing)])
    before = {i: redis_client.hgetall(keys.job(i)) for i in existing}
    ids = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=10), "batch")
    owners = data.draw(st.lists(st.sampled_from(["first", "other", "a:b"]), min_size=len(ids)))
    expected = []
    for n, i in enumerate(ids):
        if i in existing or i in ids[:n]:
            expected.append((n, i))
    depth_before = depth(redis_client, "mail.msc")
    batch = [job(o, id=i) for i, o in zip(ids, owners, strict=False)]
    if not expected:
        assert [str(i) for i in dispatcher.send_many(batch)] == ids
        return
    with pytest.raises(JobIdsTaken) as caught:
        dispatcher.send_many(batch)
    assert [(e.index, e.job_id) for e in caught.value.errors] == expected
    # nothing of the batch recorded or published; the existing jobs untouched
    assert depth(redis_client, "mail.msc") == depth_before
    assert {i: redis_client.hgetall(keys.job(i)) for i in existing} == before
    assert {k.decode() for k in redis_client.scan_iter("md:*:job:*")} == {
        keys.job(i) for i in existing
    }


# -- HTTP and CLI ----------------------------------------------------------------------------------
def test_http_answers_409_naming_the_taken_id(api: Api) -> None:  # noqa: F811 (fixture)
    headers = bearer(api.key)
    first = api.client.post("/v1/messages", json=job(), headers=headers).json()["id"]
    res = api.client.post("/v1/messages", json=job("acct-9", id=first), headers=headers)
    assert res.status_code == 409, res.text
    assert res.json()["errors"] == [
        {"field": "id", "message": f"job id {first} already exists; a job id is never reused"}
    ]
    fresh = str(uuid.uuid4())
    res = api.client.post(
        "/v1/messages:batch",
        json={"jobs": [job(id=fresh), job(), job(id=first)]},
        headers=headers,
    )
    assert res.status_code == 409, res.text
    assert [(e["index"], e["field"]) for e in res.json()["errors"]] == [(2, "id")]
    assert api.redis.exists(keys.job(fresh)) == 0
    assert len(api.queued()) == 1


def cli(redis_url: str, *args: str, key: str = SECRET) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    env |= {"MAILDISPATCH_BROKER_URL": redis_url, "MAILDISPATCH_SECRET_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_exits_73_on_a_taken_id(
    dispatcher: Dispatcher, redis_client: redis.Redis, redis_url: str, tmp_path: Any
) -> None:
    existing = str(dispatcher.send(job()))
    lines = tmp_path / "jobs.jsonl"
    fresh = str(uuid.uuid4())
    import json

    lines.write_text(
        "\n".join(json.dumps(job("acct-9", id=i)) for i in (fresh, existing)) + "\n",
        encoding="utf-8",
    )
    out = cli(redis_url, "send-batch", str(lines))
    assert out.returncode == 73, out.stderr
    assert f"line 2: job id {existing} already exists" in out.stderr
    assert redis_client.exists(keys.job(fresh)) == 0
    assert queued_ids(redis_client) == [existing]
    # a too-short secret key: refused before anything (EX_CONFIG)
    out = cli(redis_url, "send-batch", str(lines), key="short-key-" + "x" * 21)
    assert out.returncode == 78 and "shorter than 32 bytes" in out.stderr


# -- keys ------------------------------------------------------------------------------------------
@given(st.text(min_size=1), st.text(), st.text(min_size=1), st.text())
def test_idempotency_key_names_never_collide(o1: str, k1: str, o2: str, k2: str) -> None:
    if (o1, k1) != (o2, k2):
        assert keys.idempotency(o1, k1) != keys.idempotency(o2, k2)


def test_colon_owners_and_keys_are_separate_jobs(dispatcher: Dispatcher) -> None:
    one = dispatcher.send(job("a", idempotency_key="x:k"))
    two = dispatcher.send(job("a:x", idempotency_key="k"))
    assert one != two
    assert dispatcher.send(job("a", idempotency_key="x:k")) == one
    assert dispatcher.send(job("a:x", idempotency_key="k")) == two


@pytest.mark.parametrize(
    ("key", "ok"),
    [("k" * 31, False), ("é" * 15 + "k", False), ("é" * 16, True), ("k" * 32, True)],
)
def test_a_secret_key_shorter_than_32_bytes_is_refused(key: str, ok: bool) -> None:
    s = Settings(secret_key=key, _env_file=None)  # type: ignore[call-arg,arg-type]
    if ok:
        assert s.require_secret_key() == key
    else:
        with pytest.raises(ConfigurationError, match="shorter than 32 bytes"):
            s.require_secret_key()


def test_a_job_repeated_in_one_call_with_its_key_is_one_job(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    same = job(id=str(uuid.uuid4()), idempotency_key="order-3")
    ids = dispatcher.send_many([same, job(), same])
    assert ids[0] == ids[2] and str(ids[0]) == same["id"]
    assert sorted(queued_ids(redis_client)) == sorted({str(i) for i in ids})
