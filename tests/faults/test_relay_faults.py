"""A relay that goes away for 30 s, and one that answers 421 to every other connection."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import MakeFleet
from tests.support.faulty_relay import FaultyRelay
from tests.support.services import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

#: the issue's outage; the retry schedule below (the last delay repeating) makes any longer one
#: equivalent, as long as it stays under the give-up time
OUTAGE_S = 30.0


def job(i: int) -> dict[str, object]:
    return {
        "owner": "acme",
        "identity": "Acme <news@acme.example>",
        "to": [f"reader{i}@example.org"],
        "subject": f"Issue {i}",
        "text": "Hello",
    }


def test_relay_down_30s_then_back_delivers_everything(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay
) -> None:
    fleet = make_fleet(
        MAILDISPATCH_MSC_RETRY_DELAYS="1s,2s,4s",
        MAILDISPATCH_MSC_GIVE_UP_AFTER="10m",
        MAILDISPATCH_MSC_CONNECTIONS_PER_RELAY="4",
    )
    faulty_relay.handler.delay = 0.02
    fleet.scheduler()
    fleet.worker()
    d = fleet.dispatcher
    ids = d.send_many([job(i) for i in range(300)])
    wait_for(lambda: faulty_relay.received() >= 50, 30, 0.01, "50 sent")
    faulty_relay.down()
    in_flight = fleet.in_state(ids, "sending")
    went_down = time.monotonic()
    # while it is down every attempt fails with a dropped or refused connection: retried, and
    # nothing is given up or lost
    wait_for(lambda: fleet.in_state(ids, "retrying") > 100, 20, 0.2, "jobs waiting to retry")
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - went_down)))
    assert fleet.in_state(ids, "failed") == 0
    assert faulty_relay.received() < 300
    faulty_relay.up()
    states = fleet.wait_final(list(ids), 40)
    fleet.wait_drained()
    counts = faulty_relay.handler.by_message_id()
    assert set(states.values()) == {"sent"}
    assert len(counts) == 300
    # a message the relay stored as the connection dropped may arrive twice, no other
    assert sum(counts.values()) - len(counts) <= in_flight


def test_421_on_every_other_connection_delivers_each_once(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay
) -> None:
    fleet = make_fleet(
        MAILDISPATCH_MSC_RETRY_DELAYS="0.2s,0.5s,1s",
        MAILDISPATCH_MSC_GIVE_UP_AFTER="5m",
        MAILDISPATCH_MSC_CONNECTIONS_PER_RELAY="8",
    )
    faulty_relay.handler.flaky = True
    fleet.scheduler()
    fleet.worker()
    d = fleet.dispatcher
    ids = d.send_many([job(i) for i in range(400)])
    states = fleet.wait_final(list(ids), 60)
    fleet.wait_drained()
    counts = faulty_relay.handler.by_message_id()
    assert faulty_relay.handler.refused_connections > 0
    assert set(states.values()) == {"sent"}  # a 421 is "try later", never a failure
    assert len(counts) == 400 and set(counts.values()) == {1}
