"""Webhook lanes that reach only their endpoint, endpoints that start their failing streak
afresh, and host names DNS cannot carry: against the real Redis and store."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config import keys
from config.events import EventType, encode, job_data
from config.settings import Settings
from tests.integration.test_webhooks import Receiver
from worker.store import Store
from worker.webhooks import endpoints
from worker.webhooks.deliver import Deliverer
from worker.webhooks.outbox import lane_of

SECRET = "0123456789abcdef0123456789abcdef0123"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def settings_for(redis_url: str, db_url: str, **extra: object) -> Settings:
    return Settings(
        secret_key=SECRET,
        redis_url=redis_url,
        database_url=db_url,
        smtp_allowed_networks=("127.0.0.0/8",),
        **extra,
    )


def event_body(owner: str, job_id: str, n: int = 0) -> str:
    data = job_data(job_id, owner, "msc", ["bob@example.org"], {"n": n})
    return encode(EventType.SENT, data, n)


def queue(client: redis.Redis, endpoint_id: int, owner: str, job_id: str, n: int = 0) -> str:
    """An event on its lane, as the scheduler's fan-out leaves it."""
    lane = lane_of(endpoint_id, job_id)
    client.rpush(keys.webhook_lane(lane), event_body(owner, job_id, n))
    client.sadd(keys.WEBHOOK_LANES, lane)
    return lane


def test_enabled_again_endpoint_is_disabled_at_its_first_failure(
    redis_client: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    receiver: Receiver,
) -> None:
    """docs/webhooks.md: disabled after failing for DISABLE_AFTER; `webhooks enable` then
    delivers again. After enable, one 503 must be a retry, not an immediate disable."""
    db = f"sqlite:///{tmp_path / 'store.db'}"
    settings = settings_for(redis_url, db, webhook_disable_after=1.0, webhook_retry_delays=(0.1,))
    store = Store(db)
    d = Deliverer(settings)
    with store.session() as s:
        row, _ = endpoints.add(s, d.vault, d.policy, "acct-a", receiver.url)
        eid = row.id
    receiver.status = 503
    lane = queue(redis_client, eid, "acct-a", str(uuid.uuid4()))
    assert d.run_lane(lane) == "retrying"
    time.sleep(1.2)
    assert d.run_lane(lane) == "disabled"  # failing for longer than DISABLE_AFTER

    with store.session() as s:  # the operator enables it again (as `webhooks enable` does)
        assert endpoints.enable(s, eid)
    # a day later, say: one brief 503 from the receiver
    lane = queue(redis_client, eid, "acct-a", str(uuid.uuid4()), 1)
    assert d.run_lane(lane) == "retrying", "re-enabled endpoint disabled at its first failure"


def test_removed_endpoints_lane_goes_to_a_new_endpoint_of_another_owner(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """SQLite (the embedded default store) reuses a deleted row's id; lanes are keyed by the
    endpoint id only, and a removed endpoint's lane waiting for its retry is still there."""
    db = f"sqlite:///{tmp_path / 'store.db'}"
    settings = settings_for(redis_url, db, webhook_retry_delays=(3600.0,))
    store = Store(db)
    d = Deliverer(settings)
    with store.session() as s:
        row, _ = endpoints.add(s, d.vault, d.policy, "acct-a", "http://127.0.0.1:9/down")
        a_id = row.id
    lane = queue(redis_client, a_id, "acct-a", str(uuid.uuid4()))
    assert d.run_lane(lane) == "retrying"  # acct-a's receiver is down: the lane waits 1 h
    with store.session() as s:
        assert endpoints.remove(s, a_id)  # acct-a removes its endpoint
    with store.session() as s:  # acct-b adds one
        row, b_secret = endpoints.add(s, d.vault, d.policy, "acct-b", receiver.url)
        b_id = row.id
    # the lane's task runs (its retry time, or the sweep)
    d.run_lane(lane)
    got = receiver.events(b_secret) if receiver.got else []
    owners = [e["data"]["owner"] for e in got]
    assert "acct-a" not in owners, f"endpoint {b_id} of acct-b received acct-a's events: {got}"


def test_unresolvable_host_name_is_a_recorded_failure_not_a_crash(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """A host name with an empty label made getaddrinfo raise UnicodeError (not an OSError):
    run_lane raised, nothing was recorded, no retry scheduled, the endpoint never disabled. It
    is refused when added now; one stored before is a failure like any other."""
    db = f"sqlite:///{tmp_path / 'store.db'}"
    d = Deliverer(settings_for(redis_url, db, webhook_retry_delays=(60.0,)))
    with Store(db).session() as s, pytest.raises(endpoints.InvalidEndpoint, match="DNS"):
        endpoints.add(s, d.vault, d.policy, "acct-a", "http://hooks..example.com/x")
    with Store(db).session() as s:
        row, _ = endpoints.add(s, d.vault, d.policy, "acct-a", "http://hooks.example.com/x")
        row.url = "http://hooks..example.com/x"  # as stored before the check
        s.flush()
        eid = row.id
    lane = queue(redis_client, eid, "acct-a", str(uuid.uuid4()))
    assert d.run_lane(lane) == "retrying"
    assert redis_client.zscore(keys.WEBHOOK_DUE, lane) is not None
