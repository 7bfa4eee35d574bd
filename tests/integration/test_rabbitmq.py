"""The same delivery, with RabbitMQ as the broker (quorum queues) and job state in Redis.

The main end-to-end tests of test_msc_delivery.py run here again against a fleet whose broker is
RabbitMQ: this module's ``fleet`` fixture replaces the Redis one. Each run uses a private vhost,
deleted afterwards, so RabbitMQ is left as it was found.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.integration.test_msc_delivery import (  # noqa: F401  (collected here, on RabbitMQ)
    test_451_twice_then_accepted_is_delivered_once,
    test_batch_arrives_exactly_once_with_headers_and_envelope,
    test_partial_rejection_delivers_the_others,
    test_rejected_recipient_becomes_a_failed_send,
    test_retries_exhausted_become_expired,
)
from tests.support.fleet import Fleet, running_fleet
from tests.support.rabbit import amqp_url, private_vhost, rabbitmqctl
from tests.support.relay import Relay

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    """A private RabbitMQ vhost for this module, deleted with everything in it afterwards."""
    with private_vhost() as name:
        yield name


@pytest.fixture(scope="module")
def rabbit_fleet(
    vhost: str, session_relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """An MSC worker and the scheduler on RabbitMQ, with job state in a private Redis."""
    with running_fleet(
        tmp_path_factory.mktemp("rabbit"),
        relay_url=session_relay.url,
        broker_url=amqp_url(vhost),
        pool="prefork",
        concurrency=2,
    ) as fleet:
        yield fleet


@pytest.fixture
def fleet(rabbit_fleet: Fleet, relay: Relay) -> Fleet:
    """The RabbitMQ fleet, with an empty relay and no job state left from other tests."""
    rabbit_fleet.clear_job_state()
    return rabbit_fleet


def test_queues_are_durable_quorum_queues_with_nothing_else_declared(
    fleet: Fleet, vhost: str
) -> None:
    rows = json.loads(
        rabbitmqctl("list_queues", "-p", vhost, "name", "type", "durable", "--formatter", "json")
    )
    ours = {r["name"]: r for r in rows if r["name"].startswith("mail.")}
    assert ours["mail.msc"]["type"] == "quorum" and ours["mail.msc"]["durable"] is True
    # no countdown is ever published, so Celery's delayed-delivery queues are not declared
    assert not [r for r in rows if r["name"].startswith("celery_delayed")]
