"""The broker dies mid-batch (``kill -9`` of a Redis with ``appendfsync always``) and comes back:
no job a producer saw accepted is lost, and the producer is not refused meanwhile."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import pytest

from tests.faults.conftest import MakeFleet
from tests.support.faulty_relay import FaultyRelay
from tests.support.services import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


def job(i: int) -> dict[str, object]:
    return {
        "owner": "acme",
        "identity": "Acme <news@acme.example>",
        "to": [f"reader{i}@example.org"],
        "subject": f"Issue {i}",
        "text": "Hello",
    }


def test_broker_restart_mid_batch_loses_no_accepted_job(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay
) -> None:
    fleet = make_fleet(
        appendonly=True,
        MAILDISPATCH_MSC_RETRY_DELAYS="0.5s,1s,2s",
        MAILDISPATCH_MSC_GIVE_UP_AFTER="10m",
        MAILDISPATCH_MSC_CONNECTIONS_PER_RELAY="8",
    )
    faulty_relay.handler.delay = 0.02
    fleet.scheduler()
    worker = fleet.worker()
    d = fleet.dispatcher
    accepted: list[uuid.UUID] = []
    refused = 0

    def produce() -> None:
        nonlocal refused
        for round_ in range(60):
            try:
                accepted.extend(d.send_many([job(round_ * 20 + i) for i in range(20)]))
            except Exception:  # past MAILDISPATCH_ENQUEUE_RETRY_FOR only: not in this test
                refused += 1
            time.sleep(0.05)

    producer = threading.Thread(target=produce)
    producer.start()
    wait_for(lambda: faulty_relay.received() >= 200, 30, 0.02, "mid-batch")
    server = fleet.server
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    time.sleep(1.5)
    server.start()
    producer.join(60)
    assert not producer.is_alive()
    # the producer rides through the restart: it retries Redis' errors within its bound
    assert refused == 0 and len(accepted) == 20 * 60
    states = fleet.wait_final(list(accepted), 75)
    counts = faulty_relay.handler.by_message_id()
    lost = [i for i in accepted if f"<{i}@mail.operator.test>" not in counts]
    assert lost == [], f"{len(lost)} accepted jobs lost\n{fleet.logs(tail=3000)}"
    assert set(states.values()) == {"sent"}
    duplicates = sum(counts.values()) - len(counts)
    print(f"broker restart: {len(accepted)} accepted, {refused} refused, {duplicates} duplicates")
    assert worker.popen.poll() is None, "the worker did not survive the broker's restart"
