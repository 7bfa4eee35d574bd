"""The message history: every job's outcome, kept in the store after Redis' state is gone.

From a real worker and scheduler through ``GET /v1/messages`` and the CLI; the writer's own
rules (a failure recorded before its state, a stale snapshot, the purge) on both engines.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select

from config import keys
from config.events import EventType, encode, job_data
from tests.support.api import bearer, new_key, serve
from tests.support.events import all_events
from tests.support.fleet import Fleet
from tests.support.relay import Relay
from tests.support.services import wait_for
from worker.api.app import create_app
from worker.history import record
from worker.history.query import get_message, list_messages
from worker.history.record import HistoryWriter, write_rows
from worker.store import open_store
from worker.store.db import Store
from worker.store.models import MessageRecipient, MessageRecord
from worker.store.retention import purge

OWNER = "acct-hist"


def job(*to: str, owner: str = OWNER, **extra: Any) -> dict[str, Any]:
    return {
        "owner": owner,
        "identity": "Ann <ann@acme.example>",
        "to": list(to),
        "subject": "History",
        "text": "Hello",
        "metadata": {"order": 9},
    } | extra


class Api:
    def __init__(self, client: httpx.Client, admin: str, owned: str) -> None:
        self.client, self.admin, self.owned = client, admin, owned

    def get(self, path: str, key: str | None = None, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params, headers=bearer(key or self.admin))

    def messages(self, key: str | None = None, **params: Any) -> list[dict[str, Any]]:
        """Every page of GET /v1/messages."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            res = self.get("/v1/messages", key, **params, **({"cursor": cursor} if cursor else {}))
            assert res.status_code == 200, res.text
            page = res.json()
            found += page["messages"]
            cursor = page["next_cursor"]
            if cursor is None:
                return found


@pytest.fixture
def api(fleet: Fleet) -> Iterator[Api]:
    store = open_store(fleet.database_url)
    with store.session() as s:  # the session fleet's store keeps other tests' history
        s.execute(MessageRecipient.__table__.delete())
        s.execute(MessageRecord.__table__.delete())
    admin = new_key(store, "admin-hist")
    owned = new_key(store, "svc-hist", "read", owner=OWNER)
    with serve(create_app(fleet.settings)) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield Api(c, admin, owned)


def test_outcomes_outlive_the_redis_state(fleet: Fleet, relay: Relay, api: Api) -> None:
    d = fleet.dispatcher
    partly = d.send(job("Ok@Example.org", "reject-x@example.org"))
    refused = d.send(job("reject-y@example.org"))
    later = datetime.now(UTC) + timedelta(hours=1)
    cancelled = d.send(job("later@example.org", send_at=later.isoformat()))
    assert d.cancel(cancelled) == "cancelled"
    theirs = d.send(job("other@example.org", owner="acct-other"))
    assert fleet.wait_final([partly, refused, theirs], 30) == {
        str(partly): "sent",
        str(refused): "failed",
        str(theirs): "sent",
    }
    live = {str(i): api.get(f"/v1/messages/{i}").json() for i in (partly, refused)}

    def recorded() -> bool:
        return len(api.messages(owner=OWNER)) == 3

    wait_for(recorded, 20, 0.2, "the history has the owner's three jobs")
    # Redis' state gone (its TTL, or MAILDISPATCH_JOB_TTL set short): the history answers
    for job_id in (partly, refused, cancelled, theirs):
        fleet.redis.delete(keys.job(str(job_id)))

    kept = api.get(f"/v1/messages/{partly}").json()
    assert kept["state"] == "sent" and kept["reply"].startswith("250")
    assert kept["attempts"] == 1 and kept["subject"] == "History"
    assert kept["from_address"] == "ann@acme.example" and kept["from_replaced"] is False
    assert kept["provider_id"] == live[str(partly)]["provider_id"]
    assert kept["enqueued_at"] == live[str(partly)]["enqueued_at"]
    assert [f["recipient"] for f in kept["failed_sends"]] == ["reject-x@example.org"]
    gone = api.get(f"/v1/messages/{refused}").json()
    assert gone["state"] == "failed" and "550" in gone["last_error"]
    assert gone["last_error"] == live[str(refused)]["last_error"]
    assert api.get(f"/v1/messages/{cancelled}").json()["state"] == "cancelled"
    # the CLI's status too
    shown = fleet.status(partly)
    assert (shown["state"], shown["reply"], shown["subject"]) == ("sent", kept["reply"], "History")
    assert fleet.status(refused)["state"] == "failed"

    listed = {m["id"]: m for m in api.messages(owner=OWNER)}
    assert set(listed) == {str(partly), str(refused), str(cancelled)}
    # every recipient any outcome named: the accepted one and the refused one
    assert listed[str(partly)]["recipients"] == ["Ok@example.org", "reject-x@example.org"]
    assert listed[str(partly)]["metadata"] == {"order": 9}
    assert listed[str(cancelled)]["recipients"] == ["later@example.org"]
    cli = fleet.cli_json("messages", "list", "--owner", OWNER)
    assert [m["id"] for m in cli["messages"]] == [m["id"] for m in api.messages(owner=OWNER)]


def test_the_listing_filters_and_pages(fleet: Fleet, relay: Relay, api: Api) -> None:
    d = fleet.dispatcher
    ids = [d.send(job(f"r{n}@example.org")) for n in range(5)]
    refused = d.send(job("reject-z@example.org"))
    theirs = d.send(job("r0@example.org", owner="acct-other"))
    fleet.wait_final([*ids, refused, theirs], 30)
    wait_for(lambda: len(api.messages()) == 7, 20, 0.2, "seven jobs in the history")

    everyone = api.messages()
    assert len({m["id"] for m in everyone}) == 7
    assert api.messages(limit=2) == everyone  # page by page, the same listing
    assert [m["id"] for m in api.messages(recipient="R0@EXAMPLE.ORG", owner=OWNER)] == [str(ids[0])]
    assert {m["id"] for m in api.messages(recipient="r0@example.org")} == {
        str(ids[0]),
        str(theirs),
    }
    assert [m["id"] for m in api.messages(state="failed")] == [str(refused)]
    assert api.messages(since=(datetime.now(UTC) + timedelta(minutes=1)).isoformat()) == []
    assert len(api.messages(since=(datetime.now(UTC) - timedelta(minutes=5)).isoformat())) == 7

    # a key for one owner: its owner's only
    mine = api.messages(api.owned)
    assert {m["owner"] for m in mine} == {OWNER} and len(mine) == 6
    assert api.get("/v1/messages", api.owned, owner="acct-other").status_code == 403
    assert api.get(f"/v1/messages/{theirs}", api.owned).status_code == 404
    bad = api.get("/v1/messages", state="queued")
    assert bad.status_code == 422 and "state" in bad.text


def outcome_event(
    kind: EventType, job_id: str, recipients: list[str], at: float | None = None
) -> dict[str, str]:
    data = job_data(job_id, OWNER, "msc", recipients, {"k": "v"})
    return {"o": OWNER, "d": encode(kind, data, *recipients, at=at)}


def test_a_failure_waits_for_its_state(
    redis_client: redis.Redis, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``message.failed`` is written before the job's state: the writer waits for it."""
    import asyncio

    import redis.asyncio as aioredis

    monkeypatch.setattr(record, "SETTLE_MS", 100)  # read again sooner than in production
    job_id = str(uuid.uuid4())
    name = keys.job(job_id)
    redis_client.hset(name, mapping={"state": "sending", "owner": OWNER, "channel": "msc"})
    redis_client.xadd(
        keys.events_of(job_id), outcome_event(EventType.FAILED, job_id, ["a@example.org"])
    )
    url = redis_client.connection_pool.connection_kwargs
    writer = HistoryWriter(lambda: store, "test")

    async def tick() -> int:
        client = aioredis.Redis(host=url["host"], port=url["port"], db=url["db"])
        try:
            return await writer.tick(client)
        finally:
            await client.aclose()

    assert asyncio.run(tick()) == 0  # not final yet: left for later
    with store.session() as s:
        assert get_message(s, job_id) is None
    redis_client.hset(name, mapping={"state": "failed", "last_error": "550 no such user"})
    time.sleep(0.15)
    assert asyncio.run(tick()) == 1
    with store.session() as s:
        kept = get_message(s, job_id)
    assert kept is not None and kept.state == "failed"
    assert kept.status["last_error"] == "550 no such user" and kept.recipients == ["a@example.org"]
    assert asyncio.run(tick()) == 0  # acknowledged: not read again

    # an outcome whose state never comes (its worker died, and the state expired) is written as
    # the event says once it is old enough
    other = str(uuid.uuid4())
    old = time.time() - record.GIVE_UP_S - 1
    redis_client.xadd(
        keys.events_of(other), outcome_event(EventType.SENT, other, ["b@example.org"], old)
    )
    assert asyncio.run(tick()) == 1
    with store.session() as s:
        late = get_message(s, other)
    assert late is not None and late.state == "sent" and late.recipients == ["b@example.org"]


def row(job_id: str, state: str, updated: float, finished: datetime) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "owner": OWNER,
        "channel": "msc",
        "state": state,
        "recipients": [f"{state}@example.org"],
        "job_metadata": {},
        "status": {"state": state, "updated_at": repr(updated)},
        "finished_at": finished,
        "updated_at": datetime.fromtimestamp(updated, UTC),
    }


def test_a_newer_outcome_wins_and_the_purge_keeps_the_recent(store: Store) -> None:
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        write_rows(conn, [row("j1", "bounced", 200.0, now)])
    with store.engine.begin() as conn:  # an older snapshot read late: does not undo the bounce
        write_rows(conn, [row("j1", "sent", 100.0, now)])
    with store.session() as s:
        kept = get_message(s, "j1")
    assert kept is not None and kept.state == "bounced"
    # both events' recipients, once each
    assert kept.recipients == ["bounced@example.org", "sent@example.org"]

    with store.engine.begin() as conn:
        write_rows(conn, [row("old", "sent", 1.0, now - timedelta(days=31))])
        write_rows(conn, [row("new", "sent", 2.0, now - timedelta(days=29))])
    assert purge(store, 0, 0, history_days=30).messages == 1
    with store.session() as s:
        assert {m.job_id for m in list_messages(s).items} == {"j1", "new"}
        left = s.scalar(
            select(func.count())
            .select_from(MessageRecipient)
            .where(MessageRecipient.job_id == "old")
        )
        assert left == 0
    assert purge(store, 0, 0, history_days=0).messages == 0  # 0: kept for ever


def test_an_id_reused_by_another_owner_leaves_the_first_jobs_history_alone(store: Store) -> None:
    # once a job's state left Redis (a day after it ended), another owner can enqueue a job with
    # its id (ids are in every Message-ID): its outcome must not rewrite the first job's
    # history, nor add its recipients to it
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        write_rows(conn, [row("j2", "sent", 100.0, now)])
    other = row("j2", "failed", 200.0, now) | {"owner": "someone-else"}
    other["recipients"] = ["mallory@example.org"]
    with store.engine.begin() as conn:
        write_rows(conn, [other])
    with store.session() as s:
        kept = get_message(s, "j2")
        mine = list_messages(s, owner=OWNER).items
    assert kept is not None and (kept.owner, kept.state) == (OWNER, "sent")
    assert kept.recipients == ["sent@example.org"]
    assert [(m.job_id, m.state, m.recipients) for m in mine] == [
        ("j2", "sent", ["sent@example.org"])
    ]


def test_a_job_lost_from_the_schedule_is_reported_and_kept(
    fleet: Fleet, relay: Relay, api: Api
) -> None:
    """A job whose payload Redis lost: a Failed Send, a ``message.failed`` event, a history row."""
    from worker.jobs.lost import LOST

    job_id = str(uuid.uuid4())
    fields = {"state": "retrying", "owner": OWNER, "channel": "msc", "subject": "Gone"}
    fleet.redis.hset(keys.job(job_id), mapping=fields)
    fleet.redis.zadd(keys.schedule_of(job_id), {job_id: time.time()})
    wait_for(lambda: api.messages(state="failed"), 20, 0.2, "the lost job in the history")
    (kept,) = api.messages(state="failed")
    assert (kept["id"], kept["owner"], kept["last_error"]) == (job_id, OWNER, LOST)
    assert kept["subject"] == "Gone"
    events = [e for e in all_events(fleet.redis) if e["data"]["job_id"] == job_id]
    assert [(e["type"], e["data"]["kind"]) for e in events] == [("message.failed", "expired")]


def test_writers_split_the_shards_a_standalone_scheduler_first(
    redis_client: redis.Redis, store: Store
) -> None:
    """Every scheduler writes the history of a share of the shards; delivery workers' embedded
    schedulers only while no standalone one runs."""
    import asyncio

    import redis.asyncio as aioredis

    url = redis_client.connection_pool.connection_kwargs
    embedded = HistoryWriter(lambda: store, "worker-1", embedded=True)
    other = HistoryWriter(lambda: store, "worker-2", embedded=True)
    standalone = HistoryWriter(lambda: store, "scheduler-1")
    written = 0

    def add(n: int) -> None:
        nonlocal written
        written += n
        for _ in range(n):
            job_id = str(uuid.uuid4())
            redis_client.hset(keys.job(job_id), mapping={"state": "sent", "owner": OWNER})
            event = outcome_event(EventType.SENT, job_id, ["a@x.org"])
            redis_client.xadd(keys.events_of(job_id), event)

    async def tick(writer: HistoryWriter) -> int:
        writer._rest_until = 0.0  # its rest after writing is not what this test is about
        client = aioredis.Redis(host=url["host"], port=url["port"], db=url["db"])
        try:
            return await writer.tick(client)
        finally:
            await client.aclose()

    add(40)
    assert asyncio.run(tick(embedded)) == 40  # alone: every shard is its
    assert embedded.held == set(range(keys.SHARDS))
    add(40)
    assert asyncio.run(tick(other)) == 0  # a second writer: its shards are still held
    first = asyncio.run(tick(embedded))  # gives up the second half, writes the first
    assert embedded.held == set(range(keys.SHARDS // 2))
    second = asyncio.run(tick(other))
    assert other.held == set(range(keys.SHARDS // 2, keys.SHARDS))
    assert first + second == 40 and first and second  # 40 jobs land in both halves
    add(40)
    assert asyncio.run(tick(standalone)) == 40  # a standalone scheduler takes every shard
    assert asyncio.run(tick(embedded)) == 0 and embedded.held == set()
    assert asyncio.run(tick(other)) == 0 and other.held == set()
    with store.session() as s:
        assert len(list_messages(s, limit=500).items) == written


def test_a_final_job_leaves_redis_after_the_hot_window_yet_a_late_bounce_is_attributed(
    tmp_path: Any, relay: Relay
) -> None:
    """MAILDISPATCH_JOB_HOT_TTL (here 2 s, a day by default) moves the clock: once a final job
    has left Redis, its status comes from the history, and a bounce arriving after that is
    still attributed to its owner, subject and metadata."""
    from tests.support.bounces import render
    from tests.support.fleet import running_fleet
    from worker.bounces.intake.ingest import InboundMessage, Ingest
    from worker.store import repo

    owner = f"acct-late-{uuid.uuid4().hex[:6]}"
    with running_fleet(
        tmp_path, relay_url=relay.url, env={"MAILDISPATCH_JOB_HOT_TTL": "2s"}
    ) as fleet:
        job_id = fleet.dispatcher.send(job("late@example.org", owner=owner))
        assert fleet.wait_final([job_id]) == {str(job_id): "sent"}
        assert 0 < fleet.redis.ttl(keys.job(str(job_id))) <= 2
        store = open_store(fleet.database_url)

        def remembered_and_gone() -> bool:
            with store.session() as s:
                kept = get_message(s, str(job_id))
            return kept is not None and not fleet.redis.exists(keys.job(str(job_id)))

        wait_for(remembered_and_gone, 20, 0.2, "the history has it and Redis forgot it")
        assert not fleet.redis.keys(f"*{job_id}*")  # nothing of the job is left in Redis
        assert fleet.status(job_id)["state"] == "sent"  # answered by the history

        (sent,) = [m for m in relay.handler.messages if str(job_id) in str(m.message["Message-ID"])]
        report = render(
            "postfix-userunknown", RETURN_PATH=sent.mail_from, RECIPIENT="late@example.org"
        )
        ingest = Ingest(fleet.settings, fleet.redis, store)
        outcome = ingest.handle(
            InboundMessage(raw=report, source="smtp", rcpt_tos=(sent.mail_from,), mail_from="")
        )
        assert (outcome.result, outcome.rows) == ("recorded", 1)
        with store.session() as s:
            (row,) = repo.failed_sends_for_job(s, str(job_id))
            assert (row.owner, row.recipient, row.kind, row.subject) == (
                owner,
                "late@example.org",
                "bounced",
                "History",
            )
            assert row.job_metadata == {"order": 9}
