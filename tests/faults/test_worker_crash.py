"""Workers that die: ``kill -9`` of the whole worker (twice, mid-batch), and a warm shutdown.

The relay counts every message by Message-ID (one per job). A job is lost if it never reaches a
final state or never arrives; a duplicate is a Message-ID that arrived twice. Only a job that was
``sending`` at a kill can be sent twice (the relay said 250, the worker died before recording it).
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import MakeFleet
from tests.support.faulty_relay import FaultyRelay
from tests.support.rabbit import amqp_url, private_vhost
from tests.support.services import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

JOBS = 1000
#: slow enough that a kill lands mid-batch: 2 processes x 8 connections x 60 ms per message
PACE = {
    "MAILDISPATCH_MSC_CONNECTIONS_PER_RELAY": "8",
    "MAILDISPATCH_MSC_RETRY_DELAYS": "0.5s,1s",
    "MAILDISPATCH_MSC_GIVE_UP_AFTER": "120s",
}


def job(i: int) -> dict[str, object]:
    return {
        "owner": "acme",
        "identity": "Acme <news@acme.example>",
        "to": [f"reader{i}@example.org"],
        "subject": f"Issue {i}",
        "text": "x" * 1500,
    }


def test_kill9_twice_mid_batch_loses_nothing(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay
) -> None:
    fleet = make_fleet(**PACE)
    faulty_relay.handler.delay = 0.06
    fleet.scheduler()
    first = fleet.worker()
    d = fleet.dispatcher
    ids = d.send_many([job(i) for i in range(JOBS)])

    in_flight = []
    victim = first
    for threshold in (250, 600):
        # mid-batch: a solo worker (the Procfile's msc line) has gaps between its batches
        wait_for(
            lambda t=threshold: faulty_relay.received() >= t and fleet.in_state(ids, "sending") > 0,
            60,
            0.02,
            f"{threshold} sent, a batch in flight",
        )
        victim.kill9()
        # the only jobs that may be sent twice: claimed, maybe accepted, not recorded
        in_flight.append(fleet.in_state(ids, "sending"))
        victim = fleet.worker()

    states = fleet.wait_final(list(ids), 60)
    fleet.wait_drained()
    counts = faulty_relay.handler.by_message_id()
    duplicates = sum(counts.values()) - len(counts)
    assert set(states.values()) == {"sent"}, fleet.logs(tail=3000)
    assert len(counts) == JOBS, "a job was lost"
    assert duplicates <= sum(in_flight), (duplicates, in_flight)
    assert min(in_flight) > 0, "the kills did not land mid-batch"
    print(f"kill -9 x2: in flight at the kills {in_flight}, duplicates {duplicates}")


def test_warm_shutdown_mid_batch_loses_nothing_and_sends_nothing_twice(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay
) -> None:
    fleet = make_fleet(**PACE)
    faulty_relay.handler.delay = 0.06
    fleet.scheduler()
    first = fleet.worker()
    d = fleet.dispatcher
    ids = d.send_many([job(i) for i in range(JOBS)])
    wait_for(lambda: faulty_relay.received() >= 300, 60, 0.02, "300 sent")
    first.stop(timeout=60)  # SIGTERM: finish the running batches, hand the rest back
    assert first.popen.returncode == 0, first.text()[-3000:]
    assert faulty_relay.received() < JOBS, "the shutdown did not land mid-batch"
    fleet.worker()
    states = fleet.wait_final(list(ids), 60)
    fleet.wait_drained()
    counts = faulty_relay.handler.by_message_id()
    assert set(states.values()) == {"sent"}
    assert len(counts) == JOBS and set(counts.values()) == {1}


def test_kill9_on_rabbitmq_redelivers_the_batch_at_once(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay
) -> None:
    with private_vhost() as vhost:
        # RabbitMQ itself hands a dead consumer's unacked batches to the next one as soon as its
        # connection drops (no visibility timeout); the jobs it had claimed come back through
        # their batch's lease, as on Redis
        fleet = make_fleet(broker_url=amqp_url(vhost), **PACE)
        faulty_relay.handler.delay = 0.06
        fleet.scheduler()
        victim = fleet.worker()
        d = fleet.dispatcher
        ids = d.send_many([job(i) for i in range(400)])
        wait_for(lambda: faulty_relay.received() >= 100, 60, 0.02, "100 sent")
        victim.kill9()
        in_flight = fleet.in_state(ids, "sending")
        fleet.worker()
        states = fleet.wait_final(list(ids), 60)
        counts = faulty_relay.handler.by_message_id()
        assert len(counts) == 400, "a job was lost"
        assert sum(counts.values()) - len(counts) <= in_flight
        assert set(states.values()) == {"sent"}
        fleet.close()
