"""The worker's own RabbitMQ consumer: prefetch held, acknowledgements in runs, messages given
back, and a lost connection that loses and doubles nothing; single sends delivered together
and announced to Flower (task-sent events in lists, the worker's task events) on RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiormq
import pytest
import redis
from structlog.testing import capture_logs

from config.celery import PRIORITY_BULK, PRIORITY_URGENT, QUEUE_ARGUMENTS, make_celery
from producers.client import Dispatcher
from producers.sentevents import SentEvents
from tests.integration.test_http_flower import (  # noqa: F401  (collected here, on RabbitMQ)
    test_single_sends_are_announced_as_sent_with_ids_only,
)
from tests.integration.test_stream import (  # noqa: F401  (collected here, on RabbitMQ)
    test_single_sends_are_delivered_concurrently_by_one_worker,
)
from tests.support.env import make_settings, worker_env
from tests.support.fleet import Fleet, running_fleet
from tests.support.rabbit import amqp_url, private_vhost, queue_counts, rabbitmqctl
from tests.support.relay import Relay
from tests.support.services import wait_for
from worker.consume.fetch.amqp import AmqpFetcher
from worker.consume.fetch.message import Fetched
from worker.consume.stream import consumer_windows

pytestmark = pytest.mark.e2e

FINAL = {"sent", "failed", "suppressed", "bounced"}


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    """A private RabbitMQ vhost for this module, deleted with everything in it afterwards."""
    with private_vhost() as name:
        yield name


@pytest.fixture(scope="module")
def rabbit_fleet(
    vhost: str, session_relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """One solo MSC worker process on RabbitMQ, job state in a private Redis."""
    with running_fleet(
        tmp_path_factory.mktemp("rabbit-fetch"),
        relay_url=session_relay.url,
        broker_url=amqp_url(vhost),
    ) as fleet:
        yield fleet


@pytest.fixture
def fleet(rabbit_fleet: Fleet, relay: Relay) -> Fleet:
    """The RabbitMQ fleet, with an empty relay and no job state left from other tests."""
    rabbit_fleet.clear_job_state()
    return rabbit_fleet


def test_prefetch_runs_of_acks_and_a_message_given_back() -> None:
    with private_vhost() as vhost:
        asyncio.run(_fetch_and_check(vhost))


async def _fetch_and_check(vhost: str) -> None:
    url = amqp_url(vhost)
    connection = await aiormq.connect(url)
    channel = await connection.channel()
    await channel.queue_declare("q.test", durable=True, arguments={"x-queue-type": "quorum"})
    for i in range(6):
        body = json.dumps([[[{"id": f"job{i}"}]], {}, {}]).encode()
        await channel.basic_publish(
            body,
            routing_key="q.test",
            properties=aiormq.spec.Basic.Properties(
                content_type="application/json",
                headers={"id": f"task{i}", "task": "maildispatch.deliver.msc"},
                delivery_mode=2,
            ),
        )
    taken: list[Fetched] = []
    poison: list[int] = []
    fetcher = AmqpFetcher(url, ["q.test"], 4, taken.append, lambda: poison.append(1))
    fetcher.start()
    try:
        await _until(lambda: len(taken) == 4)
        await asyncio.sleep(0.3)  # RabbitMQ would push more now if the prefetch did not hold
        assert len(taken) == 4
        first = taken[0]
        assert first.headers["id"] == "task0" and first.jobs == 1 and first.key == "q.test"
        assert first.payload[0][0] == [{"id": "job0"}]
        # two finished behind one still running: acknowledged on their own, room for two more
        fetcher.finished(taken[1], ok=True)
        fetcher.finished(taken[2], ok=True)
        await _until(lambda: len(taken) == 6)
        # a crashed one goes back and comes again; the front one: one acknowledgement for the run
        fetcher.finished(taken[3], ok=False)
        await _until(lambda: len(taken) == 7)
        assert taken[6].headers["id"] == "task3"
        fetcher.finished(taken[0], ok=True)
        await _until(lambda: fetcher.held_jobs == 3)
    finally:
        await fetcher.stop()
        await fetcher.close()
    # closed with three held: exactly those are back in the queue, the four acknowledged are gone.
    # RabbitMQ returns a closed channel's unacknowledged messages through the quorum queue's log,
    # after the close has been answered: wait for the count, then make sure it stays there.
    await _until_ready(channel, 3)
    await asyncio.sleep(0.3)
    assert (await channel.queue_declare("q.test", passive=True)).message_count == 3
    again: list[Fetched] = []
    fetcher = AmqpFetcher(url, ["q.test"], 4, again.append, lambda: poison.append(1))
    fetcher.start()
    try:
        await _until(lambda: len(again) == 3)
        assert sorted(m.headers["id"] for m in again) == ["task3", "task4", "task5"]
        await _finish_all(fetcher, again)
    finally:
        await fetcher.stop()
        await fetcher.close()
    assert (await channel.queue_declare("q.test", passive=True)).message_count == 0
    assert fetcher.held_jobs == 0 and not poison
    await connection.close()


def test_processes_share_a_backlog_of_batches_and_single_sends_pass_it(
    tmp_path: Path, redis_client: redis.Redis, redis_url: str
) -> None:
    """On RabbitMQ a batch of more than BIG_BATCH jobs waits in its channel's batch queue, which
    a worker process consumes a couple of batches at a time: a backlog queued before the
    processes start is shared between them (one queue with a prefetch of 256 gave it all to the
    first), and a single send sent behind it is taken at once."""
    with private_vhost() as vhost:
        env = worker_env(redis_url, f"sqlite:///{tmp_path / 's.db'}", "smtp://127.0.0.1:9")
        env |= {"MAILDISPATCH_BROKER_URL": amqp_url(vhost), "MAILDISPATCH_REDIS_URL": redis_url}
        settings = make_settings(env)
        d = Dispatcher(settings)
        try:
            d.send_many([job(f"r{i}@example.org") for i in range(1000)])  # 5 batches of 200
            windows = consumer_windows(
                ["mail.msc"], settings.worker_prefetch, 2 * settings.worker_jobs, 200
            )
            assert windows == {"mail.msc": settings.worker_prefetch, "mail.msc.batches": 2}
            asyncio.run(_shared(amqp_url(vhost), windows, lambda: d.send(job("one@example.org"))))
        finally:
            d.close()


async def _shared(url: str, windows: dict[str, int], single: Callable[[], object]) -> None:
    first: list[Fetched] = []
    second: list[Fetched] = []
    declared = dict.fromkeys(windows, QUEUE_ARGUMENTS)  # mail.msc: Celery's consumer's, in a fleet
    a = AmqpFetcher(url, windows, 256, first.append, lambda: None, declare=declared)
    b = AmqpFetcher(url, windows, 256, second.append, lambda: None, declare=declared)
    a.start()
    try:
        await _until(lambda: len(first) == 2)
        await asyncio.sleep(0.3)  # RabbitMQ would push more now if the window did not hold
        assert [m.jobs for m in first] == [200, 200]
        b.start()
        await _until(lambda: len(second) == 2)
        await asyncio.sleep(0.3)
        assert [m.jobs for m in second] == [200, 200]
        await asyncio.to_thread(single)  # behind the fifth batch, on the channel's own queue
        await _until(lambda: any(m.jobs == 1 for m in first + second))
        assert sum(m.jobs for m in first + second) == 801
        for message in list(first):  # room again: the fifth batch comes
            a.finished(message, ok=True)
        await _until(lambda: len(first) + len(second) == 6)
        assert sorted(m.jobs for m in first + second) == [1, 200, 200, 200, 200, 200]
        await _finish_all(a, [m for m in first if (a.held.get(m.tag) is m)])
        await _finish_all(b, second)
    finally:
        for fetcher in (a, b):
            await fetcher.stop()
            await fetcher.close()


async def _finish_all(fetcher: AmqpFetcher, messages: list[Fetched]) -> None:
    """Finish every message, then wait until the fetcher holds none."""
    for message in messages:
        fetcher.finished(message, ok=True)
    await _until(lambda: not fetcher.held)


def job(to: str) -> dict[str, object]:
    return {
        "owner": "acme",
        "identity": "Acme <support@acme.example>",
        "to": [to],
        "subject": "Hi",
        "text": "Body\n",
    }


def test_lanes_go_out_as_rabbitmq_orders_them_and_come_back_as_lanes(
    tmp_path: Path, redis_client: redis.Redis, redis_url: str
) -> None:
    """On RabbitMQ a higher priority goes first (quorum queues since 4.0: above 4): a single send
    is published above 4, a batch below; the worker's consumer reads them back as the urgent
    and the bulk lane, which its gate orders."""
    with private_vhost() as vhost:
        env = worker_env(redis_url, f"sqlite:///{tmp_path / 's.db'}", "smtp://127.0.0.1:9")
        env |= {"MAILDISPATCH_BROKER_URL": amqp_url(vhost), "MAILDISPATCH_REDIS_URL": redis_url}
        d = Dispatcher(make_settings(env))
        try:
            d.send_many([job("a@example.org"), job("b@example.org")])
            d.send(job("one@example.org"))
        finally:
            d.close()
        asyncio.run(_lanes_read_back(amqp_url(vhost)))


async def _lanes_read_back(url: str) -> None:
    connection = await aiormq.connect(url)
    channel = await connection.channel()
    got = []
    for _ in range(2):
        message = await channel.basic_get("mail.msc", no_ack=False)
        got.append((len(json.loads(message.body)[0][0]), message.header.properties.priority))
    assert sorted(got) == [(1, 9), (2, 0)]  # (jobs, AMQP priority)
    await channel.basic_recover(requeue=True)
    await channel.close()
    taken: list[Fetched] = []
    fetcher = AmqpFetcher(url, ["mail.msc"], 8, taken.append, lambda: None)
    fetcher.start()
    try:
        await _until(lambda: len(taken) == 2)
        assert sorted((m.jobs, m.priority) for m in taken) == [
            (1, PRIORITY_URGENT),
            (2, PRIORITY_BULK),
        ]
        await _finish_all(fetcher, taken)
    finally:
        await fetcher.stop()
        await fetcher.close()
        await connection.close()


def test_connections_closed_mid_run_lose_and_double_nothing(
    fleet: Fleet, relay: Relay, vhost: str
) -> None:
    # every connection of the vhost (the worker's consumer, Celery's, the producer's) is
    # closed while the worker holds messages whose jobs are at the relay: the held messages go
    # back to the queue, the worker connects again, and the claims keep each job to one send
    relay.handler.delay = 0.3
    d = Dispatcher(fleet.settings)
    try:
        ids = [d.send(job(f"cut{i}-{uuid.uuid4().hex[:6]}@example.org")) for i in range(30)]
        wait_for(lambda: len(relay.handler.messages) >= 3, 20, what="first deliveries")
        rabbitmqctl("close_all_connections", "-p", vhost, "maildispatch test: connection cut")
        wait_for(
            lambda: all((d.status(i) or {}).get("state") in FINAL for i in ids),
            60,
            what="every job final after the cut",
        )
        assert {(d.status(i) or {}).get("state") for i in ids} == {"sent"}
        counts = relay.handler.by_message_id()
        assert all(counts[f"<{i}@mail.operator.test>"] == 1 for i in ids), counts
        wait_for(lambda: queue_counts(vhost, "mail.msc") == (0, 0), 20, what="queue empty")
    finally:
        relay.handler.delay = 0.0
        d.close()


async def _until_ready(channel: aiormq.abc.AbstractChannel, count: int) -> None:
    deadline = time.monotonic() + 10.0
    while (await channel.queue_declare("q.test", passive=True)).message_count != count:
        assert time.monotonic() < deadline, f"the queue never held {count} ready messages"
        await asyncio.sleep(0.05)


async def _until(ok: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def events_with_no_broker() -> SentEvents:
    """A producer's task-sent events whose broker cannot be reached."""
    settings = make_settings(
        worker_env("redis://127.0.0.1:1/0", "sqlite://", "smtp://127.0.0.1:9")
        | {"MAILDISPATCH_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"}
    )
    return SentEvents(make_celery(settings))


def test_a_send_never_publishes_events_itself_and_their_buffer_is_bounded() -> None:
    # events wait for the flush timer, never published in the sender's thread (the broker here
    # is unreachable: a publish would log a loss); past the bound, new ones are dropped
    events = events_with_no_broker()
    events.MAX_BUFFERED = 5
    events.FLUSH = 60.0  # no timer flush during the test
    with capture_logs() as logs:
        for n in range(8):
            events.publish("task-sent", {"uuid": f"t{n}", "name": "x"}, None)
        assert events.buffered() == 5
        assert not [e for e in logs if e["event"] == "sent_events_lost"]
        events.close()
    assert [e["events"] for e in logs if e["event"] == "sent_events_lost"] == [5]


def test_sent_events_are_dropped_not_raised_when_the_broker_is_away() -> None:
    # the task-sent events of a producer are best effort: a list that cannot be published is
    # logged and dropped, never raised into the send() that published the task
    events = events_with_no_broker()
    with capture_logs() as logs:
        events.publish("task-sent", {"uuid": "t1", "name": "x"}, None)
        events.flush_now()
        events.close()
    assert events.buffered() == 0
    assert [e["events"] for e in logs if e["event"] == "sent_events_lost"] == [1]
