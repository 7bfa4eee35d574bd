"""worker/jobs/autopipe.py against a real Redis: coalesced calls, per-call results and errors."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from worker.jobs.autopipe import AutoPipeline

ECHO = "return {KEYS[1], ARGV[1]}"
FAIL_ON_BAD = "if ARGV[1] == 'bad' then return redis.error_reply('refused') end return ARGV[1]"


def test_calls_of_one_iteration_share_a_round_trip(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def main() -> tuple[list[object], int]:
        client = aioredis.Redis.from_url(redis_url)
        auto = AutoPipeline(client)
        echo = client.register_script(ECHO)
        await client.script_load(ECHO)
        try:
            results = await asyncio.gather(
                *(auto.script(echo, [f"k{i}"], [i * 1.5]) for i in range(200))
            )
            return list(results), auto.pipelines
        finally:
            await client.aclose()

    results, pipelines = asyncio.run(main())
    assert results == [[f"k{i}".encode(), repr(i * 1.5).encode()] for i in range(200)]
    assert pipelines == 1


def test_an_error_reaches_only_its_caller_and_a_flushed_script_is_reloaded(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def main() -> list[object]:
        client = aioredis.Redis.from_url(redis_url)
        auto = AutoPipeline(client)
        script = client.register_script(FAIL_ON_BAD)
        try:
            await client.script_flush()  # NOSCRIPT on first use: loaded, then run again
            return list(
                await asyncio.gather(
                    *(auto.script(script, ["k"], [a]) for a in ("one", "bad", "three")),
                    return_exceptions=True,
                )
            )
        finally:
            await client.aclose()

    one, bad, three = asyncio.run(main())
    assert one == b"one" and three == b"three"
    assert isinstance(bad, redis.ResponseError) and "refused" in str(bad)


def test_an_unreachable_redis_fails_every_caller(redis_client: redis.Redis) -> None:
    async def main() -> list[object]:
        client = aioredis.Redis(port=1, socket_connect_timeout=0.5)  # nothing listens there
        auto = AutoPipeline(client)
        script = client.register_script(ECHO)
        try:
            return list(
                await asyncio.gather(
                    *(auto.script(script, ["k"], ["v"]) for _ in range(3)),
                    return_exceptions=True,
                )
            )
        finally:
            await client.aclose()

    errors = asyncio.run(main())
    assert all(isinstance(e, redis.ConnectionError) for e in errors)


@pytest.mark.parametrize("calls", [1, 2500])
def test_many_calls_are_split_and_all_answered(
    redis_url: str, redis_client: redis.Redis, calls: int
) -> None:
    async def main() -> list[object]:
        client = aioredis.Redis.from_url(redis_url)
        auto = AutoPipeline(client, max_calls=1000)
        echo = client.register_script(ECHO)
        try:
            return list(
                await asyncio.gather(*(auto.script(echo, ["k"], [str(i)]) for i in range(calls)))
            )
        finally:
            await client.aclose()

    assert [r[1] for r in asyncio.run(main())] == [str(i).encode() for i in range(calls)]  # type: ignore[index]
