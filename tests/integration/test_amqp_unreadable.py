"""RabbitMQ's consumer never holds a message for ever: one whose headers are not what Celery
writes, one behind it in the same run, and messages finished as the connection is lost."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiormq
import pytest

from producers.client import Dispatcher
from tests.support.env import make_settings
from tests.support.fleet import Fleet, running_fleet
from tests.support.rabbit import amqp_url, private_vhost, queue_counts, rabbitmqctl
from tests.support.relay import Relay

pytestmark = pytest.mark.e2e

FINAL = {"sent", "failed", "suppressed", "bounced"}


def job(to: str) -> dict[str, object]:
    return {
        "owner": "acme",
        "identity": "Acme <support@acme.example>",
        "to": [to],
        "subject": "Hi",
        "text": "Body\n",
    }


async def _publish_raw(url: str, messages: list[tuple[bytes, dict, int | None]]) -> None:
    """Publish (body, headers, priority) messages to mail.msc back to back."""
    connection = await aiormq.connect(url)
    channel = await connection.channel()
    for body, headers, priority in messages:
        await channel.basic_publish(
            body,
            routing_key="mail.msc",
            properties=aiormq.spec.Basic.Properties(
                content_type="application/json",
                content_encoding="utf-8",
                headers=headers,
                delivery_mode=2,
                priority=priority,
            ),
        )
    await connection.close()


def bad_message(retries: object = "x") -> tuple[bytes, dict, int | None]:
    """A task message of the msc task whose ``retries`` header is not a number (a foreign or
    buggy producer); ``int(retries)`` once raised in the stream, and the message stayed held."""
    task_id = uuid.uuid4().hex
    body = json.dumps([[[{"id": str(uuid.uuid4())}]], {}, {}]).encode()
    headers = {"id": task_id, "task": "maildispatch.deliver.msc", "retries": retries}
    return body, headers, 9


@pytest.fixture
def small_prefetch_fleet(session_relay: Relay, tmp_path: Path) -> Iterator[tuple[Fleet, str]]:
    with (
        private_vhost() as vhost,
        running_fleet(
            tmp_path,
            relay_url=session_relay.url,
            broker_url=amqp_url(vhost),
            env={"MAILDISPATCH_WORKER_PREFETCH": "2"},
        ) as fleet,
    ):
        yield fleet, vhost


def test_undecodable_headers_do_not_stall_the_consumer(
    small_prefetch_fleet: tuple[Fleet, str], relay: Relay
) -> None:
    """Two messages the stream cannot read (a non-numeric ``retries`` header) must be settled
    (acknowledged as poison, or rejected), not held forever: with a prefetch of 2 they would
    otherwise fill the consumer's window and no further send is ever delivered."""
    fleet, vhost = small_prefetch_fleet
    url = amqp_url(vhost)
    d = fleet.dispatcher
    first = d.send(job("warm@example.org"))
    fleet.wait_final([first], timeout=30)
    asyncio.run(_publish_raw(url, [bad_message(), bad_message()]))
    time.sleep(1.0)
    good = d.send(job("after@example.org"))
    try:
        fleet.wait_final([good], timeout=15)
    finally:
        print("queue counts (ready, unacked):", queue_counts(vhost, "mail.msc"))
        print(fleet.logs(tail=1500))
    assert queue_counts(vhost, "mail.msc") == (0, 0)


@pytest.fixture
def default_fleet(session_relay: Relay, tmp_path: Path) -> Iterator[tuple[Fleet, str]]:
    with (
        private_vhost() as vhost,
        running_fleet(tmp_path, relay_url=session_relay.url, broker_url=amqp_url(vhost)) as f,
    ):
        yield f, vhost


async def _take_one(url: str) -> tuple[bytes, dict, int | None]:
    connection = await aiormq.connect(url)
    channel = await connection.channel()
    message = await channel.basic_get("mail.msc", no_ack=True)
    await connection.close()
    props = message.header.properties
    return message.body, dict(props.headers or {}), props.priority


def test_a_bad_message_does_not_strand_a_good_one_of_the_same_run(
    default_fleet: tuple[Fleet, str], relay: Relay
) -> None:
    """After acknowledgements the fetcher expects a run of messages and hands them over together
    (``_hand_over``); if the first of the run cannot be read, the good send behind it in the same
    run must still be delivered (there is plenty of room: the default prefetch)."""
    fleet, vhost = default_fleet
    url = amqp_url(vhost)
    d = fleet.dispatcher
    warm = [d.send(job(f"warm{i}@example.org")) for i in range(4)]
    fleet.wait_final(warm, timeout=30)  # their acknowledgements: the fetcher now expects a run
    time.sleep(0.5)
    with private_vhost() as staging:  # the same job state, a broker no worker reads
        settings = make_settings(fleet.env | {"MAILDISPATCH_BROKER_URL": amqp_url(staging)})
        stage = Dispatcher(settings)
        try:
            good = stage.send(job("good@example.org"))
            good_message = asyncio.run(_take_one(amqp_url(staging)))
        finally:
            stage.close()
    asyncio.run(_publish_raw(url, [bad_message(), good_message]))
    try:
        fleet.wait_final([good], timeout=15)
    finally:
        print("queue counts (ready, unacked):", queue_counts(vhost, "mail.msc"))


def test_a_flush_caught_by_a_lost_connection_does_not_keep_messages_held() -> None:
    """Messages finished as the connection is lost are not acknowledged (RabbitMQ gives them
    back), but the fetcher must stop holding them: a warm shutdown waits until it holds none."""
    with private_vhost() as vhost:
        asyncio.run(_lost_mid_flush(vhost))


async def _until(ok: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _lost_mid_flush(vhost: str) -> None:
    from worker.consume.fetch.amqp import AmqpFetcher
    from worker.consume.fetch.message import Fetched

    url = amqp_url(vhost)
    connection = await aiormq.connect(url)
    channel = await connection.channel()
    await channel.queue_declare("q.cut", durable=True, arguments={"x-queue-type": "quorum"})
    for i in range(64):
        await channel.basic_publish(
            json.dumps([[[{"id": f"job{i}"}]], {}, {}]).encode(),
            routing_key="q.cut",
            properties=aiormq.spec.Basic.Properties(
                content_type="application/json",
                headers={"id": f"t{i}", "task": "x"},
                delivery_mode=2,
            ),
        )
    await connection.close()
    taken: list[Fetched] = []
    fetcher = AmqpFetcher(url, ["q.cut"], 64, taken.append, lambda: None)
    fetcher.start()
    try:
        assert await _until(lambda: len(taken) == 64)
        first_generation = list(taken)
        conn = fetcher._connection
        assert conn is not None

        def finish_behind_the_first(_: object) -> None:
            # the connection is going (the broker closed it): the jobs of 40 messages behind
            # the first, still running, finish at that moment
            for message in first_generation[1:41]:
                fetcher.finished(message, ok=True)

        conn._reader_task.add_done_callback(finish_behind_the_first)  # type: ignore[attr-defined]
        await asyncio.to_thread(rabbitmqctl, "close_all_connections", "-p", vhost, "cut")
        assert await _until(lambda: fetcher._generation == 2)
        # the rest of the lost channel's messages finish (each message is finished once)
        for message in [first_generation[0], *first_generation[41:]]:
            fetcher.finished(message, ok=True)
        # the new channel's copies are finished too
        assert await _until(lambda: len(taken) >= 128)
        for message in taken[64:]:
            fetcher.finished(message, ok=True)
        drained = await _until(lambda: not fetcher.held, timeout=5)
        stuck = [t for t in asyncio.all_tasks() if "AmqpFetcher._flush" in repr(t.get_coro())]
        assert drained, (
            f"{len(fetcher.held)} finished messages still held (of generations "
            f"{sorted({k[0] for k in fetcher.held})}); {len(stuck)} _flush task(s) stuck: "
            + "; ".join(repr(t) for t in stuck)
        )
    finally:
        await fetcher.stop()
        await fetcher.close()
