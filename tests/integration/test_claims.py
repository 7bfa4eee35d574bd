"""The claim, the in-flight registry and its reaper, and the schedule, against real Redis.

Each scenario is one a crash produces: a holder that stops renewing its lease (its process died),
a batch that crashes, a stale task copy arriving while a retry waits, a job re-scheduled while
the scheduler is publishing it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from config import keys
from config.settings import Settings
from producers.client import Dispatcher
from tests.support.env import SECRET
from tests.support.queue import lanes, raw_messages, task_body
from worker.jobs.inflight import reap
from worker.jobs.scheduler import tick
from worker.jobs.state import JobStates


def wire(i: int = 0) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "owner": "acme",
        "channel": "msc",
        "identity": "Acme <a@acme.example>",
        "to": [f"u{i}@example.org"],
        "subject": "s",
        "text": "t",
    }


def enqueued(client: redis.Redis, *jobs: dict[str, Any]) -> None:
    """Record jobs as a producer does before publishing them (a claim of a job without state
    finds it vanished)."""
    for j in jobs:
        client.hset(keys.job(j["id"]), mapping={"state": "queued", "owner": j["owner"]})


def queued(client: redis.Redis) -> list[str]:
    """Job ids of every batch waiting on mail.msc."""
    ids = []
    for raw in raw_messages(client, "mail.msc"):
        body = task_body(raw)
        ids += [j["id"] for j in body[0][0]]
    return ids


@pytest.fixture
def dispatcher(redis_url: str, redis_client: redis.Redis) -> Dispatcher:
    d = Dispatcher(Settings(broker_url=redis_url, secret_key=SECRET))  # type: ignore[arg-type]
    yield d  # type: ignore[misc]
    d.close()


def run(redis_url: str, scenario: Callable[[aioredis.Redis], Awaitable[None]]) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await scenario(client)
        finally:
            await client.aclose()

    asyncio.run(main())


def test_a_dead_holders_jobs_are_republished_and_resent_as_uncertain(
    redis_url: str, redis_client: redis.Redis, dispatcher: Dispatcher
) -> None:
    jobs = [wire(i) for i in range(3)]
    enqueued(redis_client, *jobs)

    async def scenario(client: aioredis.Redis) -> None:
        holder = JobStates(client, lease=0.3, ttl=3600)
        other = JobStates(client, lease=0.3, ttl=3600)
        release = asyncio.Event()

        async def deliver() -> None:
            # job 0 is being sent when the process "dies"; job 1 was sent; job 2 never claimed
            assert (await holder.claim(jobs[0]["id"], "acme", "msc")).decision == "go"
            assert (await holder.claim(jobs[1]["id"], "acme", "msc")).decision == "go"
            await holder.finish(jobs[1]["id"], "sent")
            await release.wait()

        work = asyncio.create_task(holder.inflight.run(jobs, deliver))
        await asyncio.sleep(0.1)
        # a redelivered copy while the holder lives and renews its lease: busy, however long
        await asyncio.sleep(0.5)
        assert (await other.claim(jobs[0]["id"], "acme", "msc")).decision == "busy"
        assert await reap(client, dispatcher) == 0
        # the process dies: nothing renews its lease any more
        await holder.inflight.close()
        await asyncio.sleep(0.4)
        assert await reap(client, dispatcher) == 2  # the one in flight and the unclaimed one
        assert sorted(queued(redis_client)) == sorted([jobs[0]["id"], jobs[2]["id"]])
        assert await client.zcard(keys.INFLIGHT) == 0
        assert await client.keys(keys.batch("*")) == []
        again = await other.claim(jobs[0]["id"], "acme", "msc")
        assert (again.decision, again.attempt) == ("uncertain", 2)
        assert (await other.claim(jobs[1]["id"], "acme", "msc")).decision == "done"
        assert (await other.claim(jobs[2]["id"], "acme", "msc")).decision == "go"
        release.set()
        await work

    run(redis_url, scenario)


def test_a_crashed_batch_is_reaped_at_once(
    redis_url: str, redis_client: redis.Redis, dispatcher: Dispatcher
) -> None:
    jobs = [wire()]
    enqueued(redis_client, *jobs)

    async def scenario(client: aioredis.Redis) -> None:
        states = JobStates(client, lease=60, ttl=3600)

        async def crash() -> None:
            await states.claim(jobs[0]["id"], "acme", "msc")
            raise ConnectionError("the database went away")

        with pytest.raises(ConnectionError):
            await states.inflight.run(jobs, crash)
        # no need to wait a minute for the lease: the batch marked itself expired
        assert (
            await JobStates(client, lease=60, ttl=3600).claim(jobs[0]["id"], "acme", "msc")
        ).decision == "uncertain"
        await states.finish(jobs[0]["id"], "sent")
        assert await reap(client, dispatcher) == 0  # finished meanwhile: nothing to resend
        assert queued(redis_client) == []
        await states.inflight.close()

    run(redis_url, scenario)


def test_a_finished_batch_leaves_nothing_in_redis(
    redis_url: str, redis_client: redis.Redis
) -> None:
    jobs = [wire()]
    enqueued(redis_client, *jobs)

    async def scenario(client: aioredis.Redis) -> None:
        states = JobStates(client, lease=60, ttl=3600)

        async def deliver() -> str:
            await states.claim(jobs[0]["id"], "acme", "msc")
            await states.finish(jobs[0]["id"], "sent")
            return "ok"

        assert await states.inflight.run(jobs, deliver) == "ok"
        await states.inflight.close()

    run(redis_url, scenario)
    assert redis_client.zcard(keys.INFLIGHT) == 0
    assert redis_client.keys(keys.batch("*")) == []
    assert redis_client.hget(keys.job(jobs[0]["id"]), "holder") is None


def test_a_stale_copy_does_not_run_a_retry_early(redis_url: str, redis_client: redis.Redis) -> None:
    job = wire()
    enqueued(redis_client, job)

    async def scenario(client: aioredis.Redis) -> None:
        states = JobStates(client, lease=60, ttl=3600)
        claim = await states.claim(job["id"], "acme", "msc")
        await states.schedule_retry(job["id"], job, time.time() + 7200, None, last_error="451")
        # Redis' visibility timeout hands the old task out again, over and over: it waits
        for _ in range(3):
            assert (await states.claim(job["id"], "acme", "msc")).decision == "wait"
        assert claim.attempt == 1
        assert await client.hget(keys.job(job["id"]), "attempts") == b"1"

    run(redis_url, scenario)


def test_a_job_rescheduled_while_being_published_stays_scheduled(
    redis_url: str, redis_client: redis.Redis
) -> None:
    job = wire()
    enqueued(redis_client, job)

    async def scenario(client: aioredis.Redis) -> None:
        states = JobStates(client, lease=60, ttl=3600)
        await states.claim(job["id"], "acme", "msc")
        await states.schedule_retry(job["id"], job, time.time() - 1, None)
        (taken,) = await states.take_due()
        assert taken == (job["id"], job)
        # the published copy runs, fails again and schedules its next retry before the
        # scheduler got to remove the entry it published
        await states.claim(job["id"], "acme", "msc")
        due = time.time() + 600
        await states.schedule_retry(job["id"], job, due, None)
        await states.published([job["id"]])
        assert await client.zscore(keys.schedule_of(job["id"]), job["id"]) == pytest.approx(due)
        assert await client.exists(keys.payload(job["id"]))

    run(redis_url, scenario)


def test_published_removes_what_it_published(redis_url: str, redis_client: redis.Redis) -> None:
    job = wire()
    enqueued(redis_client, job)

    async def scenario(client: aioredis.Redis) -> None:
        states = JobStates(client, lease=60, ttl=3600)
        await states.schedule_retry(job["id"], job, time.time() - 1, None)
        assert [i for i, _ in await states.take_due()] == [job["id"]]
        await states.published([job["id"]])
        assert await client.zcard(keys.schedule_of(job["id"])) == 0
        assert not await client.exists(keys.payload(job["id"]))

    run(redis_url, scenario)


def test_deferral_uses_no_attempt_and_no_give_up_time(
    redis_url: str, redis_client: redis.Redis
) -> None:
    job = wire()
    enqueued(redis_client, job)

    async def scenario(client: aioredis.Redis) -> None:
        states = JobStates(client, lease=60, ttl=3600)
        await states.claim(job["id"], "acme", "msc")
        await states.defer(job["id"], job, time.time() + 30, "domain:example.org")
        state = await client.hgetall(keys.job(job["id"]))
        assert state[b"state"] == b"deferred" and state[b"deferred_by"] == b"domain:example.org"
        assert state[b"attempts"] == b"0"
        assert await client.zscore(keys.schedule_of(job["id"]), job["id"]) is not None
        assert (await states.claim(job["id"], "acme", "msc")).decision == "wait"
        await client.hset(keys.job(job["id"]), "next_at", time.time())  # its slot has come
        claim = await states.claim(job["id"], "acme", "msc")
        assert claim.decision == "go" and claim.attempt == 1
        assert claim.deferred == pytest.approx(30, abs=1)
        counters = await client.hgetall(keys.COUNTERS)
        assert counters[b"deferred"] == b"1" and counters[b"deferred:domain"] == b"1"

    run(redis_url, scenario)


def test_a_wait_beyond_the_ttl_keeps_state_and_payload_until_due(
    redis_url: str, redis_client: redis.Redis
) -> None:
    retried, deferred = wire(), wire()
    enqueued(redis_client, retried, deferred)

    async def scenario(client: aioredis.Redis) -> None:
        states = JobStates(client, lease=60, ttl=3600)  # an hour of TTL, waits of a day
        day = time.time() + 86400
        for job in (retried, deferred):
            await states.claim(job["id"], "acme", "msc")
        await states.schedule_retry(retried["id"], retried, day, None, last_error="451")
        await states.defer(deferred["id"], deferred, day, "domain:example.org")
        for job in (retried, deferred):
            for name in (keys.job(job["id"]), keys.payload(job["id"])):
                assert await client.ttl(name) >= 86400 + 3600 - 5, name

    run(redis_url, scenario)


def test_a_job_without_state_is_claimed_as_vanished_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    job = wire()

    async def scenario(client: aioredis.Redis) -> None:
        states = JobStates(client, lease=60, ttl=3600)
        assert (await states.claim(job["id"], "acme", "msc")).decision == "vanished"
        # a concurrent copy while the first records it: busy, not a second Failed Send
        assert (await states.claim(job["id"], "acme", "msc")).decision == "busy"
        await states.finish(job["id"], "failed", last_error="vanished")
        assert (await states.claim(job["id"], "acme", "msc")).decision == "done"

    run(redis_url, scenario)


def test_writes_ride_through_a_redis_restart(tmp_path: Any) -> None:
    from tests.support.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    sent, retried = wire(0), wire(1)
    sync = redis.Redis.from_url(server.url)
    enqueued(sync, sent, retried)

    async def scenario(client: aioredis.Redis) -> None:
        states = JobStates(client, lease=30, ttl=3600)
        for job in (sent, retried):
            assert (await states.claim(job["id"], "acme", "msc")).decision == "go"
        server.stop()  # Redis goes away between the 250 and its record
        back = asyncio.get_running_loop().run_in_executor(
            None, lambda: (time.sleep(1.5), server.start())
        )
        await asyncio.gather(
            states.finish(sent["id"], "sent"),
            states.schedule_retry(retried["id"], retried, time.time() + 60, ("u1@example.org",)),
        )
        await back
        assert states.unrecorded == {}

    try:
        run(server.url, scenario)
        assert sync.hget(keys.job(sent["id"]), "state") == b"sent"
        assert sync.hget(keys.job(retried["id"]), "pending") == b'["u1@example.org"]'
        assert sync.zscore(keys.schedule_of(retried["id"]), retried["id"]) is not None
    finally:
        sync.close()
        server.stop()


def test_a_copy_published_early_leaves_its_job_waiting_in_the_schedule(
    redis_url: str, redis_client: redis.Redis, dispatcher: Dispatcher
) -> None:
    # a scheduler on a host whose clock runs 3 s ahead publishes a retry before it is due by the
    # worker's clock: the worker's claim answers `wait` and its copy is acknowledged. The job
    # must still be in the schedule, with its payload, and go out once due
    job = wire()
    enqueued(redis_client, job)

    async def scenario(client: aioredis.Redis) -> None:
        states = JobStates(client, lease=60, ttl=3600)
        await states.claim(job["id"], "acme", "msc")
        due = time.time() + 2
        await states.schedule_retry(job["id"], job, due, None, last_error="451")
        schedule = keys.schedule_of(job["id"])
        # what the ahead scheduler does: takes it as due, publishes it, removes it
        await client.zadd(schedule, {job["id"]: time.time() - 1})
        assert await tick(states, dispatcher) == 1
        assert await client.zscore(schedule, job["id"]) is None
        assert (await states.claim(job["id"], "acme", "msc")).decision == "wait"
        assert await states.keep_waiting(job["id"], job)  # what delivery does on `wait`
        assert await client.zscore(schedule, job["id"]) == pytest.approx(due)
        assert json.loads(await client.get(keys.payload(job["id"]))) == job
        assert not await states.keep_waiting(job["id"], job)  # in the schedule: left alone
        redis_client.delete(*lanes("mail.msc"))  # the early copy is acknowledged
        await asyncio.sleep(max(0.0, due - time.time()) + 0.1)
        assert await tick(states, dispatcher) == 1  # due now: published again
        assert queued(redis_client) == [job["id"]]
        assert (await states.claim(job["id"], "acme", "msc")).decision == "go"
        assert not await states.keep_waiting(job["id"], job)  # sending: left alone

    run(redis_url, scenario)


def test_a_dead_holders_published_retry_comes_back_within_the_lease(
    redis_url: str, redis_client: redis.Redis, dispatcher: Dispatcher
) -> None:
    # a retry the scheduler published (out of the schedule, still `retrying` until claimed) is
    # taken by a process that dies before its claim (waiting at its gate): the reaper brings it
    # back with the batch's queued job, not the broker's visibility timeout minutes later
    retry, fresh, waiting = wire(0), wire(1), wire(2)
    enqueued(redis_client, retry, fresh, waiting)

    async def scenario(client: aioredis.Redis) -> None:
        states = JobStates(client, lease=0.3, ttl=3600)
        for j in (retry, waiting):
            await states.claim(j["id"], "acme", "msc")
        await states.schedule_retry(retry["id"], retry, time.time() - 1, None, last_error="451")
        assert await tick(states, dispatcher) == 1  # published: out of the schedule
        # another retry of the same batch waits in the schedule still: the scheduler's to send
        await states.schedule_retry(waiting["id"], waiting, time.time() + 60, None, last_error="4")
        redis_client.delete(*lanes("mail.msc"))  # the dying worker took the message
        holder = JobStates(client, lease=0.3, ttl=3600)
        started = asyncio.Event()

        async def held_at_the_gate() -> None:
            started.set()
            await asyncio.sleep(3600)

        work = asyncio.create_task(holder.inflight.run([retry, fresh, waiting], held_at_the_gate))
        await started.wait()
        await holder.inflight.close()  # kill -9: nothing renews the lease any more
        work.cancel()
        await asyncio.sleep(0.5)
        assert await reap(client, dispatcher) == 2
        assert sorted(queued(redis_client)) == sorted([retry["id"], fresh["id"]])
        assert await client.zscore(keys.schedule_of(waiting["id"]), waiting["id"]) is not None

    run(redis_url, scenario)
