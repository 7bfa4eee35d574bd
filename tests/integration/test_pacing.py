"""Fleet-wide pacing: the windows in real Redis, and deferral through a real worker fleet."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from config import keys
from config.settings import Settings
from producers.job import parse_job
from tests.support.env import SECRET
from tests.support.faulty_relay import FaultyRelay
from tests.support.fleet import FAST_RECOVERY, Fleet, running_fleet
from tests.support.services import free_port, wait_for
from worker.jobs.pacing import Pacing

JOB = {
    "owner": "acme",
    "identity": "Acme <a@acme.example>",
    "to": ["x@example.org"],
    "subject": "s",
    "text": "t",
}


def pacing(redis_url: str, channel: str, **settings: Any) -> tuple[Pacing, aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    return Pacing(Settings(secret_key=SECRET, **settings), channel, client), client  # type: ignore[arg-type]


def test_a_window_admits_its_count_then_gives_spaced_slots(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def scenario() -> None:
        p, client = pacing(redis_url, "msc", msc_domain_limits="Pace.Example=3/s")
        job = parse_job(JOB | {"to": ["a@pace.example"]})
        scopes = p.scopes(job, None, ["a@PACE.example", "b@elsewhere.org"])
        assert [s for s, _ in scopes] == ["domain:pace.example"]
        t = 1_000_000.05  # inside the first 100 ms bucket of a second
        assert [await p.acquire(scopes, t) for _ in range(3)] == [0, 0, 0]
        first = await p.acquire(scopes, t + 0.01)
        second = await p.acquire(scopes, t + 0.02)
        # capacity returns when all of the first bucket is older than 1 s; the next deferred job
        # gets the slot after it (1/3 s later), not the same instant
        assert first == pytest.approx(1_000_001.1)
        assert second == pytest.approx(first + 1 / 3)
        assert await p.acquire(scopes, t + 1.1) == 0  # a new window: admitted again
        await client.aclose()

    asyncio.run(scenario())


def test_gmail_rolling_day_and_minute_limits_both_hold(
    redis_url: str, redis_client: redis.Redis
) -> None:
    class Account:
        email = "Ann@Gmail.example"

    async def scenario() -> None:
        p, client = pacing(redis_url, "gmail", gmail_limits="5/24h,3/1m")
        job = parse_job(JOB)
        scopes = p.scopes(job, Account(), job.recipients)
        assert [s for s, _ in scopes] == ["gmail:ann@gmail.example"]
        t = 2_000_000.0
        assert [await p.acquire(scopes, t + i) for i in range(3)] == [0, 0, 0]
        assert await p.acquire(scopes, t + 3) == pytest.approx(t + 61)  # the minute is full
        assert [await p.acquire(scopes, t + 61 + i) for i in range(2)] == [0, 0]
        # five in the rolling day: the sixth waits until the first leaves the 24 h window
        due = await p.acquire(scopes, t + 200)
        assert t + 86_400 <= due <= t + 86_400 + 86_400 / 60
        await client.aclose()

    asyncio.run(scenario())


def test_smtp_limits_per_server_with_a_host_override(
    redis_url: str, redis_client: redis.Redis
) -> None:
    class Account:
        host = "SMTP.Example.net"
        port = 587

    p, client = pacing(
        redis_url, "smtp", smtp_limits="100/1m", smtp_server_limits="smtp.example.net=10/1m"
    )
    scopes = p.scopes(parse_job(JOB), Account(), ["x@example.org"])
    assert [(s, [str(r) for r in rates]) for s, rates in scopes] == [
        ("smtp:smtp.example.net:587", ["10/60s"])
    ]
    asyncio.run(client.aclose())


def test_no_limit_configured_costs_no_redis_call(redis_url: str, redis_client: redis.Redis) -> None:
    async def scenario() -> None:
        p, client = pacing(redis_url, "msc")
        assert not p.enabled
        assert await p.over_limit(parse_job(JOB), None, ["x@example.org"]) is None
        await client.aclose()

    asyncio.run(scenario())
    assert redis_client.keys(keys.rate("*")) == []


@pytest.fixture
def paced_fleet(tmp_path: Path) -> Iterator[tuple[Fleet, FaultyRelay]]:
    relay = FaultyRelay(free_port()).up()
    limits = {"MAILDISPATCH_MSC_DOMAIN_LIMITS": "pace.example=5/s"}
    try:
        with running_fleet(tmp_path, relay_url=relay.url, env=FAST_RECOVERY | limits) as fleet:
            yield fleet, relay
    finally:
        relay.down()


def test_jobs_over_a_domain_limit_are_deferred_not_failed(
    paced_fleet: tuple[Fleet, FaultyRelay],
) -> None:
    fleet, relay = paced_fleet
    d = fleet.dispatcher
    paced = d.send_many([JOB | {"to": [f"u{i}@pace.example"]} for i in range(30)])
    free = d.send_many([JOB | {"to": [f"u{i}@free.example"]} for i in range(30)])

    # a deferred job shows why and until when in `maildispatch status`
    def latest_deferred() -> str | None:
        pipe = fleet.redis.pipeline(transaction=False)
        for job_id in paced:
            pipe.hmget(keys.job(str(job_id)), "state", "next_at")
        waiting = [
            (float(next_at), str(job_id))
            for job_id, (state, next_at) in zip(paced, pipe.execute(), strict=True)
            if state == b"deferred"
        ]
        return max(waiting)[1] if waiting else None

    wait_for(latest_deferred, 10, 0.05, "a deferred job")
    seen = fleet.status(str(latest_deferred()))
    assert seen["state"] == "deferred", seen
    assert seen["deferred_by"] == "domain:pace.example" and float(seen["next_at"]) > 0
    states = fleet.wait_final([*paced, *free], 40)
    assert set(states.values()) == {"sent"}
    counts = relay.handler.by_message_id()
    assert len(counts) == 60 and set(counts.values()) == {1}
    # 5 a second across the fleet: 30 messages span at least 5 s at the relay. Sends are
    # admitted (counted) just before their SMTP transaction, so a second measured at the relay
    # may hold the tail of one admitted second and the head of the next, never more.
    times = sorted(t for t, rcpt in relay.handler.arrivals if rcpt.endswith("@pace.example"))
    assert times[-1] - times[0] >= (30 - 5) / 5 - 0.2
    assert max(sum(1 for u in times if t <= u < t + 1) for t in times) <= 2 * 5
    assert fleet.counters()["deferred"] >= 25
    attempts = [fleet.redis.hget(keys.job(str(i)), "attempts") for i in paced]
    assert set(attempts) == {b"1"}  # a deferral is not an attempt
