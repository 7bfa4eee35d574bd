"""Redis blips and a broker that fails partway (issue #14, items 7 and 8).

Real parts only: private redis-servers (``appendfsync always``) killed and restarted, a real
worker and relay. A message the relay accepted while Redis was away is recorded once Redis is
back, never sent again; a producer rides through a restart instead of raising; a publish that
fails partway names exactly which jobs were enqueued, and those (only those) are on the queue.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import redis

from config import keys
from config.settings import Settings
from producers.client import Dispatcher, EnqueueFailed, JobIdsTaken
from producers.enqueue import is_transient
from tests.faults.conftest import MakeFleet
from tests.support.env import SECRET
from tests.support.faulty_relay import FaultyRelay
from tests.support.queue import raw_messages, task_body
from tests.support.redis_server import RedisServer
from tests.support.services import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]


def job(i: int, **extra: object) -> dict[str, object]:
    return {
        "owner": "acme",
        "identity": "Acme <news@acme.example>",
        "to": [f"reader{i}@example.org"],
        "subject": f"Issue {i}",
        "text": "Hello",
    } | extra


def kill9(server: RedisServer) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    server.proc = None


def restart_later(server: RedisServer, delay: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), server.start()))
    thread.start()
    return thread


def queued_ids(client: redis.Redis) -> list[str]:
    return [j["id"] for raw in raw_messages(client, "mail.msc") for j in task_body(raw)[0][0]]


@pytest.mark.parametrize(
    ("lease", "outage"),
    [
        ("30s", 1.0),  # the writes are retried within the lease, while the holder renews it
        ("2s", 4.0),  # past the lease: the batch crashes, its retry records what is held
    ],
)
def test_a_message_accepted_while_redis_is_away_is_recorded_not_resent(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay, lease: str, outage: float
) -> None:
    fleet = make_fleet(appendonly=True, MAILDISPATCH_CLAIM_LEASE=lease)
    fleet.scheduler()
    worker = fleet.worker()
    d = fleet.dispatcher
    faulty_relay.handler.delay = 2.0  # every DATA answered 2 s after it arrives
    ids = d.send_many([job(i) for i in range(10)])
    # every job is claimed and in its SMTP transaction: Redis dies before the 250s come back
    wait_for(lambda: len(faulty_relay.handler.rcpt_times) == 10, 30, 0.01, "all in DATA")
    kill9(fleet.server)
    wait_for(lambda: faulty_relay.received() == 10, 30, 0.05, "relay accepted all")
    time.sleep(outage)  # the worker's `sent` writes fail meanwhile, and are retried
    fleet.server.start()
    states = fleet.wait_final(list(ids), 60)
    assert set(states.values()) == {"sent"}, fleet.logs(tail=3000)
    time.sleep(3)  # a resend, were there one, would happen now (redelivery, reaper)
    counts = faulty_relay.handler.by_message_id()
    assert sorted(counts.values()) == [1] * 10, f"{counts}\n{fleet.logs(tail=3000)}"
    assert "state_record_retry" in worker.text()  # recorded by retrying, not by luck
    if outage > 2:  # held through the crash, recorded by the batch's retry
        assert worker.text().count('"event":"state_recorded_late"') == 10
    assert worker.popen.poll() is None


def test_a_producer_rides_through_a_redis_restart(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay
) -> None:
    fleet = make_fleet(appendonly=True, MAILDISPATCH_ENQUEUE_RETRY_FOR="20s")
    fleet.scheduler()
    fleet.worker()
    d = fleet.dispatcher
    d.send(job(0))  # connected
    kill9(fleet.server)
    restarted = restart_later(fleet.server, 1.5)
    one = d.send(job(1, idempotency_key="order-1"))  # waits for Redis, no error
    many = d.send_many([job(i) for i in range(2, 22)])
    restarted.join()
    # the retried idempotency claim found its own key: one job
    assert d.send(job(1, idempotency_key="order-1")) == one
    states = fleet.wait_final([one, *many], 60)
    assert set(states.values()) == {"sent"}
    counts = faulty_relay.handler.by_message_id()
    assert all(counts[f"<{i}@mail.operator.test>"] == 1 for i in [one, *many]), counts


@pytest.fixture
def broker(tmp_path: Path) -> RedisServer:
    server = RedisServer(tmp_path / "broker", appendonly=True).start()
    yield server  # type: ignore[misc]
    server.stop()


def dispatcher(broker: RedisServer, redis_url: str, retry_for: float) -> Dispatcher:
    return Dispatcher(
        Settings(
            broker_url=broker.url,
            redis_url=redis_url,
            secret_key=SECRET,  # type: ignore[arg-type]
            batch_size=10,
            enqueue_retry_for=retry_for,
            _env_file=None,  # type: ignore[call-arg]
        )
    )


def test_a_publish_failing_partway_names_exactly_the_jobs_enqueued(
    broker: RedisServer, redis_url: str, redis_client: redis.Redis
) -> None:
    d = dispatcher(broker, redis_url, retry_for=1.0)
    flushed: list[int] = []

    def progress(n: int) -> None:  # the broker dies after the first flush (the first batch alone)
        flushed.append(n)
        if len(flushed) == 1:
            broker.stop()

    jobs = [job(i, idempotency_key=f"k{i}") for i in range(100)]
    with pytest.raises(EnqueueFailed) as caught:
        d.send_many(jobs, progress=progress)
    failed = caught.value
    assert len(failed.ids) == 100 and flushed == [10]
    assert len(failed.enqueued) == 10 and len(failed.not_enqueued) == 90
    assert failed.ids[:10] == failed.enqueued and failed.ids[10:] == [None] * 90
    broker.start()  # appendonly: what was published is still there
    on_queue = queued_ids(redis.Redis.from_url(broker.url))
    assert sorted(on_queue) == sorted(str(i) for i in failed.enqueued)
    for i in failed.enqueued:  # enqueued: their state and keys kept
        assert redis_client.hget(keys.job(str(i)), "state") == b"queued"
    for i in failed.not_enqueued:
        assert redis_client.hget(keys.job(str(i)), "state") in (None, b"withdrawn")
    # a retry of the whole call: the enqueued jobs answer by their keys, the others go now
    again = dispatcher(broker, redis_url, retry_for=5.0)
    ids = again.send_many(jobs)
    assert ids[:10] == failed.enqueued
    assert sorted(queued_ids(redis.Redis.from_url(broker.url))) == sorted(str(i) for i in ids)
    # the ids not enqueued may be sent again by their owner (same ids), never by another
    mine = [job(i, id=str(n)) for i, n in enumerate(failed.not_enqueued[:3])]
    with pytest.raises(JobIdsTaken):  # the retry above took other ids; these stay withdrawn
        again.send_many([dict(j, owner="intruder") for j in mine])
    assert [str(i) for i in again.send_many(mine)] == [j["id"] for j in mine]
    for x in (d, again):
        x.close()


def test_a_broker_back_within_the_bound_gets_every_job_once(
    broker: RedisServer, redis_url: str, redis_client: redis.Redis
) -> None:
    d = dispatcher(broker, redis_url, retry_for=20.0)
    restarted: list[threading.Thread] = []

    def progress(n: int) -> None:
        if not restarted:
            broker.stop()
            restarted.append(restart_later(broker, 1.5))

    ids = d.send_many([job(i) for i in range(100)], progress=progress)
    restarted[0].join()
    on_queue = queued_ids(redis.Redis.from_url(broker.url))
    assert sorted(on_queue) == sorted(str(i) for i in ids)  # each once
    assert all(redis_client.hget(keys.job(str(i)), "state") == b"queued" for i in ids)
    d.close()


def test_busy_loading_and_resets_are_transient() -> None:
    assert is_transient(redis.BusyLoadingError("LOADING"))
    assert is_transient(redis.ConnectionError("reset"))
    assert not is_transient(redis.ResponseError("WRONGTYPE"))
