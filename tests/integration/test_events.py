"""The event feed: what happened to each job, from a real worker through GET /v1/events."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from config import keys
from tests.support.api import bearer, new_key, serve
from tests.support.fleet import Fleet
from tests.support.relay import Relay
from worker.api.app import create_app
from worker.store import open_store

OWNER = "acct-ev"


def job(*to: str, owner: str = OWNER, **extra: Any) -> dict[str, Any]:
    return {
        "owner": owner,
        "identity": "Ann <ann@acme.example>",
        "to": list(to),
        "subject": "Events",
        "text": "Hello",
        "metadata": {"order": 7},
    } | extra


class Feed:
    def __init__(self, client: httpx.Client, admin: str, owned: str) -> None:
        self.client, self.admin, self.owned = client, admin, owned

    def get(self, key: str | None = None, **params: Any) -> dict[str, Any]:
        res = self.client.get("/v1/events", params=params, headers=bearer(key or self.admin))
        assert res.status_code == 200, res.text
        body: dict[str, Any] = res.json()
        return body

    def all(self, key: str | None = None, **params: Any) -> list[dict[str, Any]]:
        """Every event, page after page."""
        events: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.get(key, **params, **({"cursor": cursor} if cursor else {}))
            events += page["events"]
            if not page["events"]:
                return events
            cursor = page["next_cursor"]


@pytest.fixture
def feed(fleet: Fleet) -> Iterator[Feed]:
    store = open_store(fleet.database_url)
    admin = new_key(store, "admin")
    owned = new_key(store, "svc-ev", "read", owner=OWNER)
    with serve(create_app(fleet.settings)) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield Feed(c, admin, owned)


def of(events: list[dict[str, Any]], job_id: uuid.UUID) -> list[dict[str, Any]]:
    return [e for e in events if e["data"]["job_id"] == str(job_id)]


def test_every_outcome_is_an_event_in_order(fleet: Fleet, relay: Relay, feed: Feed) -> None:
    d = fleet.dispatcher
    partly = d.send(job("ok@example.org", "reject-x@example.org"))
    retried = d.send(job("defer2-y@example.org"))
    theirs = d.send(job("other@example.org", owner="acct-other"))
    states = fleet.wait_final([partly, retried, theirs], 30)
    assert set(states.values()) == {"sent"}

    events = feed.all(owner=OWNER)
    assert not of(events, theirs)  # another owner's job
    # one transaction, two outcomes: the refused recipient's (written with its Failed Send row)
    # and the accepted one's (written with the job's state)
    failed, sent = of(events, partly)
    assert (sent["type"], sent["data"]["recipients"]) == ("message.sent", ["ok@example.org"])
    assert failed["type"] == "message.failed"
    assert failed["data"]["recipients"] == ["reject-x@example.org"]
    assert failed["data"] | {"diagnostic": ""} == failed["data"] | {
        "kind": "rejected",
        "reason": "userunknown",
        "hard": True,
        "reply_code": 550,
        "enhanced_status": "5.1.1",
        "diagnostic": "",
    }
    for event in (sent, failed):
        assert event["id"].startswith("evt_") and event["timestamp"].endswith("Z")
        data = event["data"]
        assert (data["owner"], data["channel"], data["metadata"]) == (OWNER, "msc", {"order": 7})
    assert sent["data"]["provider_id"] is None or isinstance(sent["data"]["provider_id"], str)
    assert sent["data"]["reply"].startswith("250")

    # two temporary refusals, then the relay's 250: the events in the order they happened
    kinds = [(e["type"], e["data"].get("attempt")) for e in of(events, retried)]
    assert kinds == [("message.retrying", 1), ("message.retrying", 2), ("message.sent", 3)]
    assert of(events, retried)[0]["data"]["enhanced_status"] == "4.3.0"

    # ids are unique; the whole feed read one event at a time is the same feed
    assert len({e["id"] for e in events}) == len(events)
    assert feed.all(owner=OWNER, limit=1) == events
    everyone = feed.all()
    assert of(everyone, theirs) and len(everyone) == len(events) + len(of(everyone, theirs))


def test_a_key_for_one_owner_sees_that_owners_events(
    fleet: Fleet, relay: Relay, feed: Feed
) -> None:
    mine = fleet.dispatcher.send(job("a@example.org"))
    theirs = fleet.dispatcher.send(job("b@example.org", owner="acct-other"))
    fleet.wait_final([mine, theirs], 30)
    seen = feed.all(feed.owned)
    assert of(seen, mine) and not of(seen, theirs)
    assert {e["data"]["owner"] for e in seen} == {OWNER}
    res = feed.client.get("/v1/events", params={"owner": "acct-other"}, headers=bearer(feed.owned))
    assert res.status_code == 403
    bad = feed.client.get("/v1/events", params={"cursor": "x"}, headers=bearer(feed.admin))
    assert bad.status_code == 422


def test_a_long_poll_answers_when_an_event_arrives(fleet: Fleet, relay: Relay, feed: Feed) -> None:
    first = fleet.dispatcher.send(job("c@example.org"))
    fleet.wait_final([first], 30)
    cursor = feed.get(owner=OWNER, limit=1000)["next_cursor"]

    started = time.monotonic()
    idle = feed.get(owner=OWNER, cursor=cursor, wait=0.5)
    assert idle["events"] == [] and idle["next_cursor"] == cursor
    assert 0.4 < time.monotonic() - started < 5

    answer: dict[str, Any] = {}

    def poll() -> None:
        answer.update(feed.get(owner=OWNER, cursor=cursor, wait=20))
        answer["after"] = time.monotonic() - started

    started = time.monotonic()
    waiting = threading.Thread(target=poll)
    waiting.start()
    time.sleep(0.5)  # the poll is waiting now
    later = fleet.dispatcher.send(job("d@example.org"))
    waiting.join(25)
    assert [e["data"]["job_id"] for e in answer["events"]] == [str(later)]
    assert 0.5 < answer["after"] < 15


def test_the_stream_is_trimmed_past_its_retention(fleet: Fleet, relay: Relay) -> None:
    done = uuid.uuid4()
    stream = keys.events_of(str(done))
    fleet.redis.xadd(stream, {"o": OWNER, "d": "{}"}, id="1000-0")  # an event from 1970
    fleet.dispatcher.send(job("e@example.org", id=str(done)))
    fleet.wait_final([done], 30)
    oldest = fleet.redis.xrange(stream, count=1)
    assert oldest and oldest[0][0] != b"1000-0"


def synthetic(owner: str, job_id: str, n: int) -> dict[str, str]:
    """A stream entry of a made-up event: the feed passes the JSON on as it is."""
    data = {"job_id": job_id, "owner": owner, "n": n}
    event = {"id": f"evt_{n}", "type": "message.sent", "timestamp": "", "data": data}
    return {"o": owner, "d": json.dumps(event)}


def test_the_cursor_pages_through_every_shard_in_time_order(fleet: Fleet, feed: Feed) -> None:
    """Events of jobs in several shards, written in an order that jumps between the streams
    (two in the same millisecond, two in one stream's same millisecond): each comes out once,
    in time order, page after page; a key for one owner skips the others' across pages."""
    jobs: dict[int, str] = {}  # shard: a job in it
    while len(jobs) < 5:
        job_id = str(uuid.uuid4())
        jobs.setdefault(keys.shard(job_id), job_id)
    shards = sorted(jobs)
    base = int(time.time() * 1000) - 60_000
    ids = [f"{base + 3 * n // 2}-{n % 2}" for n in range(40)]  # ms then seq, increasing
    written = []
    for n, entry_id in enumerate(ids):
        job_id = jobs[shards[(n * 7) % len(shards)]]
        owner = OWNER if n % 3 else "acct-other"
        fleet.redis.xadd(keys.events_of(job_id), synthetic(owner, job_id, n), id=entry_id)
        written.append((n, owner))
    # two streams with an entry in the same millisecond: the first shard's comes first
    (first, second) = shards[:2]
    tie = f"{base + 100_000}-0"
    for shard in (second, first):
        job_id = jobs[shard]
        fleet.redis.xadd(keys.events_of(job_id), synthetic(OWNER, job_id, 100 + shard), id=tie)
        written.append((100 + shard, OWNER))
    written[-2:] = sorted(written[-2:])

    everyone = feed.all(limit=3)
    assert [e["data"]["n"] for e in everyone] == [n for n, _ in written]
    mine = feed.all(feed.owned, limit=2)
    assert [e["data"]["n"] for e in mine] == [n for n, o in written if o == OWNER]
    assert feed.all(limit=1000) == everyone

    page = feed.get(limit=5)
    rest = feed.get(cursor=page["next_cursor"], limit=1000)
    assert page["events"] + rest["events"] == everyone
    # read to the end: the same cursor back, and nothing new
    again = feed.get(cursor=rest["next_cursor"])
    assert again == {"events": [], "next_cursor": rest["next_cursor"]}
    # a stream id (the cursor of the single stream there was) is that position in every stream
    after = feed.get(cursor=f"{base + 30}-0", limit=1000)["events"]
    assert [e["data"]["n"] for e in after] == [n for n, _ in written][21:]

    cursor = page["next_cursor"]
    for bad in ("x", "1-x", cursor + ".0", cursor.replace("1.", "2.", 1), cursor.upper()):
        res = feed.client.get("/v1/events", params={"cursor": bad}, headers=bearer(feed.admin))
        assert res.status_code == 422, bad
        assert res.json()["errors"][0]["field"] == "cursor"
