"""A worker holds many task messages at once: single sends are delivered concurrently, the
urgent lane is taken first, and the messages' unacked copies are kombu's."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
import redis.asyncio as aioredis

from config import keys
from producers.client import Dispatcher
from tests.support.env import make_settings, worker_env
from tests.support.fleet import Fleet, running_fleet
from tests.support.redis_server import RedisServer
from tests.support.relay import Relay
from tests.support.services import wait_for
from worker.consume.fetch.message import Fetched
from worker.consume.fetch.redis import RedisFetcher
from worker.consume.stream import GATHER_WHEN

FINAL = {"sent", "failed", "suppressed", "bounced"}


def job(to: str) -> dict[str, object]:
    return {
        "owner": "acme",
        "identity": "Acme <support@acme.example>",
        "to": [to],
        "subject": "Hi",
        "text": "Body\n",
    }


def test_single_sends_are_delivered_concurrently_by_one_worker(fleet: Fleet, relay: Relay) -> None:
    # one solo worker process; the relay takes a second per message. One message at a time
    # would need 16 s; a worker holding many delivers them together.
    relay.handler.delay = 1.0
    d = Dispatcher(fleet.settings)
    try:
        started = time.monotonic()
        ids = [d.send(job(f"single{i}-{uuid.uuid4().hex[:6]}@example.org")) for i in range(16)]
        wait_for(
            lambda: all((d.status(i) or {}).get("state") in FINAL for i in ids),
            30,
            what="single sends delivered",
        )
        elapsed = time.monotonic() - started
        assert {(d.status(i) or {}).get("state") for i in ids} == {"sent"}
        assert elapsed < 8, f"16 single sends took {elapsed:.1f}s: delivered one at a time?"
        counts = relay.handler.by_message_id()
        assert all(counts[f"<{i}@mail.operator.test>"] == 1 for i in ids)
    finally:
        relay.handler.delay = 0.0
        d.close()
    # every message was acknowledged: nothing left in kombu's unacked hash
    assert fleet.redis.hlen("unacked") == 0


def test_one_job_calls_take_the_urgent_lane(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        env = worker_env(server.url, f"sqlite:///{tmp_path / 's.db'}", "smtp://127.0.0.1:9")
        d = Dispatcher(make_settings(env))
        client = redis.Redis.from_url(server.url)
        try:
            d.send(job("one@example.org"))
            d.send_many([job("a@example.org"), job("b@example.org")])
            # kombu's Redis transport: priority 0 is the queue's own list, 9 its own list
            assert client.llen("mail.msc") == 1
            assert client.llen("mail.msc\x06\x169") == 1
        finally:
            d.close()
            client.close()
    finally:
        server.stop()


def test_fetcher_takes_batches_by_jobs_held_and_urgent_messages_at_once(tmp_path: Path) -> None:
    # Two worker processes share a queue of batches: one that took every batch it has room
    # for would leave the other idle. Batches are taken while fewer jobs than the threshold
    # are held; single sends (the urgent lane) are taken whatever is held.
    server = RedisServer(tmp_path / "redis").start()
    try:
        env = worker_env(server.url, f"sqlite:///{tmp_path / 's.db'}", "smtp://127.0.0.1:9")
        env["MAILDISPATCH_BATCH_SIZE"] = "4"
        d = Dispatcher(make_settings(env))
        try:
            d.send_many([job(f"bulk{i}@example.org") for i in range(40)])  # 10 messages of 4
            singles = [d.send(job(f"one{i}@example.org")) for i in range(5)]
        finally:
            d.close()
        asyncio.run(_fetch_and_check(server.url, {str(i) for i in singles}))
    finally:
        server.stop()


async def _fetch_and_check(url: str, singles: set[str]) -> None:
    client = aioredis.Redis.from_url(url)
    taken: list[Fetched] = []
    fetcher = RedisFetcher(client, ["mail.msc"], prefetch=64, accept=taken.append, jobs=12)
    fetcher.start()
    try:

        def ids(messages: list[Fetched]) -> set[str]:
            return {str(w["id"]) for m in messages for w in m.payload[0][0]}

        await _until(lambda: ids(taken) >= singles and fetcher.held_jobs >= 12)
        await asyncio.sleep(0.3)  # time for more takes, if it were to take more
        bulk = [m for m in taken if m.jobs > 1]
        assert len(bulk) == 2, (
            f"took {len(bulk)} batches of 4 for a threshold of 12 jobs (5 held singles)"
        )
        assert await client.llen("mail.msc\x06\x169") == 8
        # a batch finished: the next one is taken, not before
        fetcher.finished(bulk[0], ok=True)
        await _until(lambda: len([m for m in taken if m.jobs > 1]) == 3)
        assert await client.llen("mail.msc\x06\x169") == 7
        # every message taken is in kombu's unacked hash until it is acknowledged
        assert await client.hlen("unacked") == len(taken) - 1
    finally:
        await fetcher.stop()
        await client.aclose()


def test_a_batch_published_to_an_idle_fetcher_is_taken_at_once(tmp_path: Path) -> None:
    # An idle fetcher blocks on its urgent list and its bulk list (a BLMOVE of each onto
    # itself), so a batch sent to an idle fleet is taken as it lands. When it only blocked on
    # the urgent list and looked for batches again every IDLE_WAIT (50 ms, timed on its loop:
    # Redis ends a blocking command's timeout only at its next tick, every 100 ms when idle), a
    # batch waited ~25 ms (median) before it was taken.
    server = RedisServer(tmp_path / "redis").start()
    try:
        env = worker_env(server.url, f"sqlite:///{tmp_path / 's.db'}", "smtp://127.0.0.1:9")
        d = Dispatcher(make_settings(env))
        try:
            waits = asyncio.run(_batch_waits(server.url, d))
        finally:
            d.close()
    finally:
        server.stop()
    waits.sort()
    median = waits[len(waits) // 2]
    assert median < 0.01, f"batches waited {[round(w * 1000) for w in waits]} ms to be taken"


async def _batch_waits(url: str, d: Dispatcher) -> list[float]:
    client = aioredis.Redis.from_url(url)
    taken: list[float] = []
    fetcher = RedisFetcher(
        client, ["mail.msc"], prefetch=64, accept=lambda m: taken.append(time.monotonic())
    )
    fetcher.start()
    waits = []
    try:
        for i in range(15):
            await asyncio.sleep(0.037 * (i % 5) + 0.05)  # at different points of a wait
            await asyncio.to_thread(d.send_many, [job(f"b{i}-{k}@example.org") for k in range(2)])
            sent = time.monotonic()
            await _until(lambda n=i: len(taken) > n)
            waits.append(taken[i] - sent)
            fetcher.finished(next(iter(fetcher.held.values())), ok=True)
    finally:
        await fetcher.stop()
        await client.aclose()
    return waits


async def _until(ok: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_sends_arriving_while_busy_are_gathered_into_one_group(
    tmp_path: Path, relay: Relay
) -> None:
    # A wide gathering window, so that what it does can be seen: sends reaching a worker with
    # few groups in flight start at once; once it has GATHER_WHEN in flight (a slow relay keeps
    # them open), sends arriving wait for the window and start together, one in-flight
    # registration (one group) for all of them, each still delivered once.
    relay.handler.delay = 3.0
    env = {"MAILDISPATCH_WORKER_GATHER": "1.0"}
    try:
        with running_fleet(tmp_path, relay_url=relay.url, env=env) as fleet:
            d = fleet.dispatcher
            first: list[uuid.UUID] = []
            for i in range(GATHER_WHEN):
                sent_at = time.monotonic()
                first.append(d.send(job(f"first{i}-{uuid.uuid4().hex[:6]}@example.org")))
                wait_for(
                    lambda: fleet.in_state(first, "sending") == len(first), 10, 0.02, "claimed"
                )
                assert time.monotonic() - sent_at < 0.8, "a worker not busy waited for the window"
            later = [d.send(job(f"later{i}-{uuid.uuid4().hex[:6]}@example.org")) for i in range(3)]
            wait_for(lambda: fleet.in_state(later, "sending") == 3, 10, 0.02, "later claimed")
            groups = [
                json.loads(fleet.redis.get(keys.batch(b.decode())) or b"[]")
                for b in fleet.redis.zrange(keys.INFLIGHT, 0, -1)
            ]
            assert sorted(len(g) for g in groups) == [1] * GATHER_WHEN + [3], groups
            every = [*first, *later]
            assert fleet.wait_final(every) == {str(i): "sent" for i in every}
            counts = relay.handler.by_message_id()
            assert all(counts[f"<{i}@mail.operator.test>"] == 1 for i in every)
    finally:
        relay.handler.delay = 0.0
