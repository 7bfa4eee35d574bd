"""The HTTP API over a real uvicorn server, real Redis and a real SQLite store (no worker here:
what is enqueued stays on the queue, where the tests count it)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from config import keys
from config.settings import Settings
from producers.job import SendJob
from tests.support.api import bearer, new_key, serve
from tests.support.env import SECRET
from tests.support.queue import raw_messages, task_body
from worker.api.app import create_app
from worker.store import Store, open_store, repo
from worker.store.apikeys import revoke_key

BODY_CAP = 256 * 1024


@dataclass
class Api:
    client: httpx.Client
    store: Store
    redis: redis.Redis
    key: str  # send and read
    read_key: str
    send_key: str

    def queued(self, queue: str = "mail.msc") -> list[list[dict[str, Any]]]:
        """The batches waiting on a queue: each Celery message's job list."""
        batches = []
        for raw in raw_messages(self.redis, queue):
            args, _kwargs, _embed = task_body(raw)
            batches.append(args[0])
        return batches

    def job_keys(self) -> list[bytes]:
        return list(self.redis.scan_iter("md:*:job:*"))


@pytest.fixture
def api(redis_client: redis.Redis, redis_url: str, tmp_path: Any) -> Iterator[Api]:
    settings = Settings(
        broker_url=redis_url,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        secret_key=SECRET,
        api_max_body_bytes=BODY_CAP,
        idempotency_wait=0.2,
        _env_file=None,  # type: ignore[call-arg]
    )
    store = open_store(settings.database_url)
    keys_ = (
        new_key(store, "svc"),
        new_key(store, "reader", "read"),
        new_key(store, "sender", "send"),
    )
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=20) as client:
        yield Api(client, store, redis_client, *keys_)
    store.dispose()


def job(to: str = "bob@example.org", **overrides: Any) -> dict[str, Any]:
    return {
        "owner": "acct-42",
        "identity": "Ann <ann@acme.example>",
        "to": [to],
        "subject": "Hi",
        "text": "Hello",
    } | overrides


# -- POST /v1/messages ---------------------------------------------------------------------------
def test_post_message_enqueues_one_job_and_answers_202_with_its_id(api: Api) -> None:
    res = api.client.post("/v1/messages", json=job(), headers=bearer(api.key))
    assert res.status_code == 202, res.text
    job_id = res.json()["id"]
    assert res.headers["location"] == f"/v1/messages/{job_id}"
    (batch,) = api.queued()
    assert [j["id"] for j in batch] == [job_id] and batch[0]["to"] == [
        {"address": "bob@example.org"}
    ]
    status = api.client.get(f"/v1/messages/{job_id}", headers=bearer(api.key)).json()
    assert (status["state"], status["channel"], status["owner"], status["attempts"]) == (
        "queued",
        "msc",
        "acct-42",
        0,
    )


def test_idempotency_key_header_makes_one_job(api: Api) -> None:
    headers = bearer(api.key) | {"Idempotency-Key": "order-7-receipt"}
    first = api.client.post("/v1/messages", json=job(), headers=headers).json()
    again = api.client.post("/v1/messages", json=job(subject="changed"), headers=headers).json()
    assert again == {"id": first["id"], "duplicate": True} and first["duplicate"] is False
    assert len(api.queued()) == 1
    other_owner = api.client.post("/v1/messages", json=job(owner="acct-9"), headers=headers).json()
    assert other_owner["id"] != first["id"]  # keys are per owner
    # another request is still enqueueing a job with this key (claimed, not yet published)
    api.redis.set(keys.idempotency("acct-42", "order-8"), f"p:{uuid.uuid4()}", ex=60)
    busy = bearer(api.key) | {"Idempotency-Key": "order-8"}
    in_progress = api.client.post("/v1/messages", json=job(), headers=busy)
    assert in_progress.status_code == 409 and "order-8" in in_progress.json()["detail"]
    assert len(api.queued()) == 2  # the first job and the other owner's: nothing more
    conflict = api.client.post("/v1/messages", json=job(idempotency_key="other"), headers=headers)
    assert (
        conflict.status_code == 422 and conflict.json()["errors"][0]["field"] == "idempotency_key"
    )


def test_invalid_job_names_every_invalid_field_and_enqueues_nothing(api: Api) -> None:
    bad = {
        "owner": "",
        "identity": "not an address",
        "to": ["bob@example.org", "nobody"],
        "subject": "Hi\r\nBcc: victim@example.org",
        "channel": "fax",
        "headers": {"X-Ok": "fine", "X-Bad": "a\nb"},
        "text": "Hello",
    }
    res = api.client.post("/v1/messages", json=bad, headers=bearer(api.key))
    assert res.status_code == 422
    fields = {e["field"] for e in res.json()["errors"]}
    assert {"owner", "identity.address", "to.1.address", "subject", "channel", "headers"} <= fields
    no_body = api.client.post("/v1/messages", json=job(text=None), headers=bearer(api.key))
    assert no_body.status_code == 422 and no_body.json()["errors"] == [
        {"field": "text", "message": "a body is required (text and/or html)"}
    ]
    malformed = api.client.post("/v1/messages", content=b'{"owner": ', headers=bearer(api.key))
    assert malformed.status_code == 422 and malformed.json()["errors"][0]["field"] == "body"
    assert api.queued() == [] and api.job_keys() == []


def test_a_body_over_the_cap_is_413_whether_declared_or_streamed(api: Api) -> None:
    big = job(text="x" * (BODY_CAP + 10))
    res = api.client.post("/v1/messages", json=big, headers=bearer(api.key))
    assert res.status_code == 413, res.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        data = json.dumps(big).encode()
        for i in range(0, len(data), 8192):
            yield data[i : i + 8192]

    streamed = api.client.post("/v1/messages:batch", content=chunks(), headers=bearer(api.key))
    assert streamed.status_code == 413
    assert api.queued() == [] and api.job_keys() == []


# -- POST /v1/messages:batch ---------------------------------------------------------------------
def test_batch_is_all_or_nothing_and_names_each_bad_job_by_index(api: Api) -> None:
    jobs = [job(f"u{i}@example.org") for i in range(5)]
    jobs[1]["to"] = ["broken"]
    jobs[3]["text"] = None
    res = api.client.post("/v1/messages:batch", json={"jobs": jobs}, headers=bearer(api.key))
    assert res.status_code == 422
    assert {(e["index"], e["field"]) for e in res.json()["errors"]} == {
        (1, "to.0.address"),
        (3, "text"),
    }
    assert api.queued() == [] and api.job_keys() == []


def test_batch_enqueues_every_job_in_batches_per_channel(api: Api) -> None:
    size = Settings.model_fields["batch_size"].default  # the API process runs the default
    jobs = [job(f"u{i}@example.org") for i in range(2 * size + 50)] + [job(channel="smtp")]
    res = api.client.post("/v1/messages:batch", json={"jobs": jobs}, headers=bearer(api.key))
    assert res.status_code == 202, res.text
    ids = res.json()["ids"]
    assert res.json()["count"] == len(jobs) and len(set(ids)) == len(jobs)
    msc = api.queued("mail.msc")
    assert sorted(len(b) for b in msc) == [50, size, size]
    (smtp,) = api.queued("mail.smtp")
    assert sorted(j["id"] for b in [*msc, smtp] for j in b) == sorted(ids)


def test_batch_limits_count_and_emptiness(api: Api) -> None:
    over = api.client.post(
        "/v1/messages:batch", json={"jobs": [job()] * 1001}, headers=bearer(api.key)
    )
    assert over.status_code == 422 and over.json()["errors"][0]["field"] == "jobs"
    empty = api.client.post("/v1/messages:batch", json={"jobs": []}, headers=bearer(api.key))
    assert empty.status_code == 422
    assert api.queued() == []


# -- auth ----------------------------------------------------------------------------------------
def test_api_keys_are_required_and_scoped(api: Api) -> None:
    none = api.client.post("/v1/messages", json=job())
    assert none.status_code == 401 and none.headers["www-authenticate"].startswith("Bearer")
    wrong = api.client.post("/v1/messages", json=job(), headers=bearer("md_" + "x" * 43))
    assert wrong.status_code == 401
    read_only = api.client.post("/v1/messages", json=job(), headers=bearer(api.read_key))
    assert read_only.status_code == 403 and "send" in read_only.json()["detail"]
    sent = api.client.post("/v1/messages", json=job(), headers={"X-API-Key": api.send_key})
    assert sent.status_code == 202
    job_id = sent.json()["id"]
    assert api.client.get(f"/v1/messages/{job_id}", headers=bearer(api.send_key)).status_code == 403
    assert api.client.get(f"/v1/messages/{job_id}", headers=bearer(api.read_key)).status_code == 200
    assert api.client.get("/v1/failed-sends", headers=bearer(api.send_key)).status_code == 403
    assert len(api.queued()) == 1  # only the authorised post


def test_a_revoked_key_is_refused(api: Api) -> None:
    key = new_key(api.store, "leaving")
    with api.store.session() as session:
        (revoked,) = revoke_key(session, key[:11])
    assert revoked.name == "leaving"
    assert api.client.post("/v1/messages", json=job(), headers=bearer(key)).status_code == 401


def test_the_store_keeps_only_a_hash_of_each_key(api: Api) -> None:
    from sqlalchemy import text

    with api.store.engine.connect() as conn:
        dump = json.dumps([list(map(str, r)) for r in conn.execute(text("SELECT * FROM api_keys"))])
    assert api.key not in dump and api.key[:11] in dump


def test_a_key_for_one_owner_sends_and_reads_that_owner_only(api: Api) -> None:
    _failed_rows(api.store, "acct-42", 2)
    _failed_rows(api.store, "acct-9", 1)
    ann = bearer(new_key(api.store, "ann's app", owner="acct-42"))
    # sending: its owner's jobs only; a batch with one other owner's job is refused whole
    mine = api.client.post("/v1/messages", json=job(), headers=ann)
    assert mine.status_code == 202
    other = api.client.post("/v1/messages", json=job(owner="acct-9"), headers=ann)
    assert other.status_code == 403
    assert other.json()["errors"] == [
        {"field": "owner", "message": "this API key sends only for owner 'acct-42'"}
    ]
    batch = {"jobs": [job(), job(owner="acct-9"), job(), job(owner="acct-7")]}
    mixed = api.client.post("/v1/messages:batch", json=batch, headers=ann)
    assert mixed.status_code == 403
    assert [(e["index"], e["field"]) for e in mixed.json()["errors"]] == [
        (1, "owner"),
        (3, "owner"),
    ]
    assert [j["id"] for b in api.queued() for j in b] == [mine.json()["id"]]
    # reading: its owner's state and Failed Sends; another owner's are unknown to it (404)
    theirs = api.client.post("/v1/messages", json=job(owner="acct-9"), headers=bearer(api.key))
    assert api.client.get(f"/v1/messages/{mine.json()['id']}", headers=ann).status_code == 200
    assert api.client.get(f"/v1/messages/{theirs.json()['id']}", headers=ann).status_code == 404
    listed = api.client.get("/v1/failed-sends", headers=ann).json()["items"]
    assert {r["owner"] for r in listed} == {"acct-42"} and len(listed) == 2
    peek = api.client.get("/v1/failed-sends", params={"owner": "acct-9"}, headers=ann)
    assert peek.status_code == 403
    everyone = api.client.get("/v1/failed-sends", headers=bearer(api.key)).json()["items"]
    (foreign,) = [r for r in everyone if r["owner"] == "acct-9"]
    assert api.client.get(f"/v1/failed-sends/{foreign['id']}", headers=ann).status_code == 404
    resend = api.client.post(f"/v1/failed-sends/{foreign['id']}/resend", headers=ann)
    assert resend.status_code == 404
    assert api.client.get(f"/v1/messages/{foreign['job_id']}", headers=ann).status_code == 404
    own = listed[0]
    assert api.client.post(f"/v1/failed-sends/{own['id']}/resend", headers=ann).status_code == 202


def test_cancel_a_queued_or_scheduled_job(api: Api) -> None:
    h = bearer(api.key)
    queued = api.client.post("/v1/messages", json=job(), headers=h).json()["id"]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = api.client.post("/v1/messages", json=job(send_at=later), headers=h).json()["id"]
    assert api.redis.zcard(keys.schedule_of(scheduled)) == 1 and api.redis.exists(
        keys.payload(scheduled)
    )
    for job_id in (queued, scheduled):
        res = api.client.post(f"/v1/messages/{job_id}/cancel", headers=h)
        assert res.status_code == 200 and res.json() == {"id": job_id, "state": "cancelled"}
        assert api.client.get(f"/v1/messages/{job_id}", headers=h).json()["state"] == "cancelled"
    # the scheduled one is out of the schedule, its payload (body) gone
    assert api.redis.zcard(keys.schedule_of(scheduled)) == 0 and not api.redis.exists(
        keys.payload(scheduled)
    )
    again = api.client.post(f"/v1/messages/{queued}/cancel", headers=h)
    assert again.status_code == 200  # cancelling twice is no error
    events = api.client.get("/metrics").text
    assert 'maildispatch_events_total{event="jobs_cancelled"} 2.0' in events  # counted once each
    assert api.client.post(f"/v1/messages/{uuid.uuid4()}/cancel", headers=h).status_code == 404
    assert (
        api.client.post(f"/v1/messages/{queued}/cancel", headers=bearer(api.read_key)).status_code
        == 403
    )
    theirs = bearer(new_key(api.store, "other app", owner="acct-9"))
    fresh = api.client.post("/v1/messages", json=job(), headers=h).json()["id"]
    assert api.client.post(f"/v1/messages/{fresh}/cancel", headers=theirs).status_code == 404
    assert api.client.get(f"/v1/messages/{fresh}", headers=h).json()["state"] == "queued"
    api.redis.hset(keys.job(fresh), "state", "sending")  # a worker's SMTP transaction under way
    late = api.client.post(f"/v1/messages/{fresh}/cancel", headers=h)
    assert late.status_code == 409 and "sending" in late.json()["detail"]


def test_suppressions_listed_added_and_removed_per_owner(api: Api) -> None:
    h = bearer(api.key)
    for owner, address in (("acct-42", "a@example.org"), ("acct-42", "b@example.org")):
        res = api.client.post(
            "/v1/suppressions", json={"owner": owner, "address": address}, headers=h
        )
        assert res.status_code == 201 and res.json()["reason"] == "manual"
    again = api.client.post(
        "/v1/suppressions", json={"owner": "acct-42", "address": "A@example.org"}, headers=h
    )
    assert again.status_code == 201 and again.json()["address"] == "a@example.org"  # no twin
    api.client.post(
        "/v1/suppressions", json={"owner": "acct-9", "address": "a@example.org"}, headers=h
    )
    bad = api.client.post(
        "/v1/suppressions", json={"owner": "acct-42", "address": "nope", "x": 1}, headers=h
    )
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {"address", "x"}

    listed = api.client.get("/v1/suppressions", params={"owner": "acct-42", "limit": 1}, headers=h)
    page = listed.json()
    assert [r["address"] for r in page["items"]] == ["b@example.org"]  # newest first
    rest = api.client.get(
        "/v1/suppressions", params={"owner": "acct-42", "cursor": page["next_cursor"]}, headers=h
    ).json()
    assert [r["address"] for r in rest["items"]] == ["a@example.org"] and rest[
        "next_cursor"
    ] is None
    one = api.client.get("/v1/suppressions", params={"address": "A@example.org"}, headers=h)
    assert sorted(r["owner"] for r in one.json()["items"]) == ["acct-42", "acct-9"]

    # a key for one owner: its own list only
    ann = bearer(new_key(api.store, "ann", owner="acct-42"))
    mine = api.client.get("/v1/suppressions", headers=ann).json()["items"]
    assert {r["owner"] for r in mine} == {"acct-42"} and len(mine) == 2
    assert (
        api.client.get("/v1/suppressions", params={"owner": "acct-9"}, headers=ann).status_code
        == 403
    )
    foreign = {"owner": "acct-9", "address": "c@example.org"}
    assert api.client.post("/v1/suppressions", json=foreign, headers=ann).status_code == 403
    theirs = {"owner": "acct-9", "address": "a@example.org"}
    assert api.client.delete("/v1/suppressions", params=theirs, headers=ann).status_code == 404
    mine_a = {"owner": "acct-42", "address": "a@example.org"}
    assert api.client.delete("/v1/suppressions", params=mine_a, headers=ann).status_code == 204
    assert api.client.delete("/v1/suppressions", params=mine_a, headers=ann).status_code == 404
    assert (
        api.client.delete(
            "/v1/suppressions", params=mine_a, headers=bearer(api.read_key)
        ).status_code
        == 403
    )
    operator = {"owner": "*", "address": "spamtrap@example.org"}
    assert api.client.post("/v1/suppressions", json=operator, headers=h).status_code == 403
    assert api.client.delete("/v1/suppressions", params=operator, headers=h).status_code == 403
    left = api.client.get("/v1/suppressions", headers=h).json()["items"]
    assert sorted((r["owner"], r["address"]) for r in left) == [
        ("acct-42", "b@example.org"),
        ("acct-9", "a@example.org"),
    ]


# -- reads ---------------------------------------------------------------------------------------
def _failed_rows(store: Store, owner: str, count: int, kind: str = "rejected") -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "job_id": str(uuid.uuid4()),
            "owner": owner,
            "channel": "msc",
            "recipient": f"gone{i}@example.org",
            "kind": kind,
            "reply_code": 550,
            "enhanced_status": "5.1.1",
            "reason": "userunknown",
            "hard": True,
            "diagnostic": "550 5.1.1 User unknown",
            "subject": f"Invoice {i}",
            "identity": "Ann <ann@acme.example>",
            "created_at": now - timedelta(minutes=count - i),
            "job_metadata": {"n": i},
            "job": job(f"gone{i}@example.org", owner=owner, id=str(uuid.uuid4()), channel="msc"),
        }
        for i in range(count)
    ]
    with store.session() as session:
        repo.record_failed_sends(session, rows)


def test_failed_sends_list_newest_first_by_cursor_with_filters(api: Api) -> None:
    _failed_rows(api.store, "acct-42", 5)
    _failed_rows(api.store, "acct-9", 2, kind="bounced")
    h = bearer(api.read_key)
    first = api.client.get("/v1/failed-sends", params={"owner": "acct-42", "limit": 3}, headers=h)
    page = first.json()
    assert [r["subject"] for r in page["items"]] == ["Invoice 4", "Invoice 3", "Invoice 2"]
    assert page["items"][0]["reason_text"] == "Mailbox does not exist (5.1.1)"
    assert "job" not in page["items"][0]  # the stored job (its body) stays inside
    rest = api.client.get(
        "/v1/failed-sends",
        params={"owner": "acct-42", "limit": 3, "cursor": page["next_cursor"]},
        headers=h,
    ).json()
    assert [r["subject"] for r in rest["items"]] == ["Invoice 1", "Invoice 0"]
    assert rest["next_cursor"] is None
    bounced = api.client.get("/v1/failed-sends", params={"kind": "bounced"}, headers=h).json()
    assert {r["owner"] for r in bounced["items"]} == {"acct-9"}
    since = (datetime.now(UTC) - timedelta(seconds=150)).isoformat()
    recent = api.client.get(
        "/v1/failed-sends", params={"owner": "acct-42", "since": since}, headers=h
    ).json()
    assert [r["subject"] for r in recent["items"]] == ["Invoice 4", "Invoice 3"]
    one = api.client.get(
        "/v1/failed-sends",
        params={"owner": "acct-42", "recipient": " GONE3@example.org"},
        headers=h,
    ).json()
    assert [r["recipient"] for r in one["items"]] == ["gone3@example.org"]
    bad = api.client.get("/v1/failed-sends", params={"kind": "nope", "cursor": "x"}, headers=h)
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} >= {"cursor"}


def test_show_and_resend_a_failed_send(api: Api) -> None:
    _failed_rows(api.store, "acct-42", 1)
    h = bearer(api.key)
    (row,) = api.client.get("/v1/failed-sends", params={"owner": "acct-42"}, headers=h).json()[
        "items"
    ]
    shown = api.client.get(f"/v1/failed-sends/{row['id']}", headers=h).json()
    assert shown == row
    res = api.client.post(f"/v1/failed-sends/{row['id']}/resend", headers=h)
    assert res.status_code == 202, res.text
    new_id = res.json()["id"]
    assert res.json()["resend_of"] == row["id"]
    (batch,) = api.queued()
    resent = SendJob.model_validate(batch[0])
    assert str(resent.id) == new_id and resent.recipients == (row["recipient"],)
    assert batch[0]["metadata"]["resend_of"] == row["id"]
    again = api.client.post(f"/v1/failed-sends/{row['id']}/resend", headers=h).json()
    assert again["id"] == new_id and len(api.queued()) == 1  # resending twice is one new job
    linked = api.client.get(f"/v1/failed-sends/{row['id']}", headers=h).json()
    assert linked["resend_job_id"] == new_id
    assert api.client.get("/v1/failed-sends/999999", headers=h).status_code == 404
    assert api.client.post("/v1/failed-sends/999999/resend", headers=h).status_code == 404
    read_only = api.client.post(
        f"/v1/failed-sends/{row['id']}/resend", headers=bearer(api.read_key)
    )
    assert read_only.status_code == 403


def test_message_status_shows_failed_sends_and_404_for_unknown(api: Api) -> None:
    _failed_rows(api.store, "acct-42", 1)
    h = bearer(api.key)
    (row,) = api.client.get("/v1/failed-sends", headers=h).json()["items"]
    status = api.client.get(f"/v1/messages/{row['job_id']}", headers=h).json()
    assert (
        status["state"] == "failed" and status["failed_sends"][0]["recipient"] == row["recipient"]
    )
    assert api.client.get(f"/v1/messages/{uuid.uuid4()}", headers=h).status_code == 404
    assert api.client.get("/v1/messages/not-a-uuid", headers=h).status_code == 422


# -- operations ----------------------------------------------------------------------------------
def test_healthz_checks_broker_redis_and_database(api: Api) -> None:
    res = api.client.get("/healthz")
    assert res.status_code == 200
    body = res.json()
    persistence = body["checks"].pop("redis_persistence")  # tests/integration/test_redis_safety.py
    assert body == {"status": "ok", "checks": {"broker": "ok", "redis": "ok", "database": "ok"}}
    # the machine's Redis runs without AOF: a warning, not a failure, unless strict
    assert persistence == "ok" or persistence.startswith("warning: redis: ")


def test_healthz_reports_an_unreachable_broker_and_database(redis_url: str, tmp_path: Any) -> None:
    settings = Settings(
        broker_url="redis://127.0.0.1:1/0",
        redis_url=redis_url,
        database_url="postgresql+psycopg://nobody:secret-pw@127.0.0.1:1/none",
        secret_key=SECRET,
        _env_file=None,  # type: ignore[call-arg]
    )
    with serve(create_app(settings)) as url:
        res = httpx.get(f"{url}/healthz", timeout=30)
    assert res.status_code == 503
    checks = res.json()["checks"]
    assert checks["redis"] == "ok"
    assert checks["broker"].startswith("error:") and checks["database"].startswith("error:")
    assert "secret-pw" not in res.text


def test_metrics_show_queue_depth_backlog_and_failed_sends(api: Api) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    api.client.post("/v1/messages:batch", json={"jobs": [job()] * 3}, headers=bearer(api.key))
    api.client.post("/v1/messages", json=job(channel="smtp"), headers=bearer(api.key))
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    api.client.post("/v1/messages", json=job(send_at=later), headers=bearer(api.key))
    _failed_rows(api.store, "acct-42", 2)
    _failed_rows(api.store, "acct-9", 1, kind="bounced")
    res = api.client.get("/metrics")
    assert res.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(res.text)
        for s in family.samples
    }
    assert samples["maildispatch_queue_messages", (("queue", "mail.msc"),)] == 1
    assert samples["maildispatch_queue_messages", (("queue", "mail.smtp"),)] == 1
    assert samples["maildispatch_queue_messages", (("queue", "mail.gmail"),)] == 0
    assert samples["maildispatch_scheduled_jobs", ()] == 1
    assert samples["maildispatch_failed_sends", (("kind", "rejected"),)] == 2
    assert samples["maildispatch_failed_sends", (("kind", "bounced"),)] == 1
    assert samples["maildispatch_bounces", (("reason", "userunknown"),)] == 1
    assert samples["maildispatch_metrics_source_up", (("source", "broker"),)] == 1
    assert (
        samples["maildispatch_api_requests_total", (("route", "/v1/messages"), ("status", "202"))]
        == 2
    )
