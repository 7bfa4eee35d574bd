"""Poison input on the queue: each malformed message is rejected once, logged and counted, and
the worker goes on delivering."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kombu import Connection, Exchange, Queue

from config.celery import DELIVER_TASK
from tests.faults.conftest import MakeFleet
from tests.support.faulty_relay import FaultyRelay
from tests.support.queue import depth

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]

JOB = {
    "owner": "acme",
    "identity": "Acme <news@acme.example>",
    "to": ["reader@example.org"],
    "subject": "After the poison",
    "text": "Hello",
}


def test_poison_is_rejected_once_logged_counted_and_the_worker_goes_on(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay
) -> None:
    fleet = make_fleet()
    fleet.scheduler()
    worker = fleet.worker()
    d = fleet.dispatcher
    exchange = Exchange("maildispatch", type="direct")
    queue = Queue("mail.msc", exchange, routing_key="mail.msc")
    with Connection(fleet.env["MAILDISPATCH_BROKER_URL"]) as conn:
        producer = conn.Producer()
        raw = {"exchange": exchange, "routing_key": "mail.msc", "declare": [queue]}
        # not JSON at all, no task headers
        producer.publish(
            "this is {not json", content_type="application/json", content_encoding="utf-8", **raw
        )
        # a task message whose body is not JSON
        producer.publish(
            "[[{{{",
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": DELIVER_TASK["msc"], "id": str(uuid.uuid4()), "lang": "py"},
            **raw,
        )
    celery = d.celery
    celery.send_task("maildispatch.deliver.nothing", args=([],), queue="mail.msc")
    celery.send_task(DELIVER_TASK["msc"], args=("not a list",), queue="mail.msc")
    celery.send_task(DELIVER_TASK["msc"], args=([],), kwargs={"urgent": True}, queue="mail.msc")
    celery.send_task(
        DELIVER_TASK["msc"], args=([{"id": "nope", "to": "nobody"}, 42],), queue="mail.msc"
    )
    job_id = d.send(JOB)
    assert fleet.wait_final([job_id], 30)[str(job_id)] == "sent"

    def settled() -> dict[str, int]:
        counters = fleet.counters()
        return {k: v for k, v in counters.items() if k.startswith("poison")}

    expected = {"poison_messages": 3, "poison_batches": 2, "poison_jobs": 2}
    deadline = time.monotonic() + 10
    while settled() != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert settled() == expected, worker.text()[-4000:]
    # rejected once: after several visibility timeouts nothing came back
    time.sleep(6)
    assert settled() == expected
    assert depth(fleet.redis, "mail.msc") == 0 and fleet.redis.hlen("unacked") == 0
    log = worker.text()
    events = {json.loads(line).get("event") for line in log.splitlines() if line.startswith("{")}
    for event in ("message_undecodable", "message_unknown_task", "batch_invalid", "job_invalid"):
        assert event in events
    assert "not json" not in log and "[[{{{" not in log  # a body is never logged
    assert worker.popen.poll() is None
    assert list(faulty_relay.handler.by_message_id().values()) == [1]
