"""Long retries do not wait in the broker: with Redis' visibility timeout at 1 s, a retry due in
6 s fires once, at its time, and one due in 2 hours does not fire at all while many visibility
timeouts pass (celery#2599: a countdown longer than the timeout ran over and over).
"""

from __future__ import annotations

import time
import uuid

import pytest

from config import keys
from tests.faults.conftest import MakeFleet
from tests.support.faulty_relay import FaultyRelay
from tests.support.queue import depth
from tests.support.services import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]


def job(to: str) -> dict[str, object]:
    return {
        "owner": "acme",
        "identity": "Acme <news@acme.example>",
        "to": [to],
        "subject": "Greylisted",
        "text": "Hello",
    }


def test_retries_beyond_the_visibility_timeout_fire_once(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay
) -> None:
    fleet = make_fleet(
        MAILDISPATCH_VISIBILITY_TIMEOUT="1s",
        MAILDISPATCH_MSC_RETRY_DELAYS="1s",
        MAILDISPATCH_MSC_GIVE_UP_AFTER="1d",
    )
    fleet.scheduler()
    fleet.worker()
    d = fleet.dispatcher
    # the relay answers "451 ... try again in N seconds" to the first attempt of each
    later, soon = "later7200-a@example.org", "later6-b@example.org"
    two_hours, six_seconds = d.send_many([job(later), job(soon)])
    wait_for(
        lambda: fleet.in_state([two_hours, six_seconds], "retrying") == 2, 20, 0.05, "retrying"
    )
    first = faulty_relay.handler.rcpt_times[soon][0]
    # a stale copy of the 2-hour job's task, as Redis would hand out again: it must wait
    d.publish([{**job(later), "id": str(two_hours), "channel": "msc"}])
    state = fleet.states([six_seconds])
    assert state[str(six_seconds)] == "retrying"
    wait_for(lambda: fleet.in_state([six_seconds], "sent") == 1, 20, 0.05, "the 6 s retry")
    time.sleep(max(0.0, first + 10 - time.time()))  # ten visibility timeouts in all

    times = faulty_relay.handler.rcpt_times
    assert len(times[soon]) == 2 and times[soon][1] - first >= 6 - 0.3
    assert list(faulty_relay.handler.by_message_id().values()) == [1]
    assert len(times[later]) == 1, "the 2-hour retry ran early"
    waiting = fleet.redis.hgetall(keys.job(str(two_hours)))
    assert waiting[b"state"] == b"retrying" and waiting[b"attempts"] == b"1"
    due = fleet.redis.zscore(keys.schedule_of(str(two_hours)), str(two_hours))
    assert due is not None and due == pytest.approx(times[later][0] + 7200, abs=5)
    # nothing of it waits in the broker: the schedule holds it
    assert depth(fleet.redis, "mail.msc") == 0 and fleet.redis.hlen("unacked") == 0


def test_a_job_enqueued_twice_with_one_key_is_sent_once(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay
) -> None:
    fleet = make_fleet()
    fleet.scheduler()
    fleet.worker()
    d = fleet.dispatcher
    key = f"order-{uuid.uuid4()}"
    ids = [d.send(job("buyer@example.org") | {"idempotency_key": key}) for _ in range(3)]
    assert len(set(ids)) == 1
    fleet.wait_final(ids[:1], 20)
    time.sleep(1)
    assert list(faulty_relay.handler.by_message_id().values()) == [1]
