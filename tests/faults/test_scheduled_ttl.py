"""Scheduled mail is never silently dropped (issue #14, item 3).

The job-state TTL is shrunk to 3 s so that waits "beyond the TTL" take seconds: a ``send_at``
and a retry due after the TTL keep their state and payload until due plus the TTL, and are
delivered; a job whose state or payload did vanish becomes a Failed Send, never only a log line.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from config import keys
from tests.faults.conftest import MakeFleet
from tests.support.faulty_relay import FaultyRelay
from tests.support.services import wait_for
from worker.store import Store, repo

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


def job(to: str, **extra: object) -> dict[str, object]:
    return {
        "owner": "acme",
        "identity": "Acme <news@acme.example>",
        "to": [to],
        "subject": "Later",
        "text": "Hello",
    } | extra


def failed_sends(tmp_path: Path, job_id: str) -> list[tuple[str, str, str]]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with store.session() as s:
            rows = repo.list_failed_sends(s, None, limit=100).items
            return [(r.kind, r.owner, r.diagnostic) for r in rows if r.job_id == job_id]
    finally:
        store.dispose()


def test_send_at_and_retries_beyond_the_ttl_are_kept_and_delivered(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay
) -> None:
    fleet = make_fleet(
        MAILDISPATCH_JOB_TTL="3s",
        MAILDISPATCH_MSC_RETRY_DELAYS="1s",
        MAILDISPATCH_MSC_GIVE_UP_AFTER="1m",
    )
    fleet.scheduler()
    fleet.worker()
    d = fleet.dispatcher
    start = time.monotonic()
    due = datetime.now(UTC) + timedelta(seconds=15)
    scheduled = d.send(job("far@example.org", send_at=due.isoformat(), idempotency_key="k1"))
    # the relay greylists this one for 12 s: its retry is due well after the 3 s TTL
    greylisted = d.send(job("later12-grey@example.org"))
    for name in (keys.job(str(scheduled)), keys.payload(str(scheduled))):
        assert fleet.redis.ttl(name) >= 15 + 3 - 2, name  # due, plus the TTL
    assert fleet.redis.ttl(keys.idempotency("acme", "k1")) >= 15 + 3 - 2
    wait_for(lambda: fleet.in_state([greylisted], "retrying") == 1, 20, 0.05, "retrying")
    assert fleet.redis.ttl(keys.payload(str(greylisted))) >= 12 + 3 - 3
    time.sleep(max(0.0, start + 6 - time.monotonic()))  # past the TTL: nothing expired
    assert fleet.states([scheduled, greylisted]) == {
        str(scheduled): "scheduled",
        str(greylisted): "retrying",
    }
    # a final state lives 3 s too: remember each job's once seen
    seen: dict[str, str] = {}

    def both_sent() -> bool:
        seen.update({i: st for i, st in fleet.states([scheduled, greylisted]).items() if st})
        return all(seen.get(str(i)) == "sent" for i in (scheduled, greylisted))

    wait_for(both_sent, 40, 0.05, f"both sent\n{fleet.logs(tail=3000)}")
    received = faulty_relay.handler.by_message_id()
    assert sorted(received.values()) == [1, 1], fleet.logs(tail=3000)
    assert d.send(job("far@example.org", idempotency_key="k1")) == scheduled  # key still there


def test_a_job_whose_state_or_payload_vanished_is_a_failed_send(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay, tmp_path: Path
) -> None:
    fleet = make_fleet()
    fleet.scheduler()
    fleet.worker()
    d = fleet.dispatcher
    # a task whose job has no state (expired while it waited, or lost by Redis): not sent blindly
    # (it may have been sent already), recorded
    lost_state = str(uuid.uuid4())
    d.publish([job("ghost@example.org", id=lost_state, channel="msc")])
    # a scheduled job whose payload is gone when it is due
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    lost_payload = d.send(job("gone@example.org", send_at=soon))
    fleet.redis.delete(keys.payload(str(lost_payload)))
    states = fleet.wait_final([lost_state, lost_payload], 30)
    assert states == {lost_state: "failed", str(lost_payload): "failed"}
    assert faulty_relay.received() == 0
    for job_id in (lost_state, str(lost_payload)):
        rows = failed_sends(tmp_path, job_id)
        assert [(kind, owner) for kind, owner, _ in rows] == [("expired", "acme")], job_id
        assert "not sent" in rows[0][2]
    assert all(fleet.redis.zcard(name) == 0 for name in keys.SCHEDULES)
