"""Key names that a Redis Cluster can serve: each script's keys in one slot, shards spread."""

from __future__ import annotations

import uuid

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from config import keys


def test_a_jobs_keys_share_the_slot_of_its_shards_schedule_and_stream() -> None:
    for _ in range(200):
        job_id = str(uuid.uuid4())
        slot = key_slot(keys.job(job_id).encode())
        assert key_slot(keys.payload(job_id).encode()) == slot
        assert key_slot(keys.schedule_of(job_id).encode()) == slot
        assert key_slot(keys.events_of(job_id).encode()) == slot


def test_shards_spread_evenly_over_the_slots_and_jobs_over_the_shards() -> None:
    slots = [key_slot(keys.schedule(n).encode()) for n in range(keys.SHARDS)]
    width = REDIS_CLUSTER_HASH_SLOTS // keys.SHARDS
    assert [s // width for s in slots] == list(range(keys.SHARDS))  # one per equal share
    # three masters get contiguous thirds of the slots: 5 or 6 shards each
    per_master = [sum(1 for s in slots if s * 3 // REDIS_CLUSTER_HASH_SLOTS == m) for m in range(3)]
    assert sorted(per_master) == [5, 5, 6]
    counts = [0] * keys.SHARDS
    for _ in range(16_000):
        counts[keys.shard(str(uuid.uuid4()))] += 1
    assert min(counts) > 850 and max(counts) < 1150


def test_keys_updated_together_share_a_slot() -> None:
    assert key_slot(keys.batch("b1").encode()) == key_slot(keys.INFLIGHT.encode())
    assert key_slot(keys.reaping("b1").encode()) == key_slot(keys.INFLIGHT.encode())
    webhook = {keys.WEBHOOK_LANES, keys.WEBHOOK_DUE, keys.WEBHOOK_ATTEMPTS, keys.WEBHOOK_FAILING}
    webhook |= {keys.webhook_lane("3:1"), keys.webhook_lease("3:1")}
    assert len({key_slot(k.encode()) for k in webhook}) == 1
    rates = {keys.rate("channel:msc:60"), keys.rate("owner:acme:1"), keys.rate("domain:x.org:60")}
    assert len({key_slot(k.encode()) for k in rates}) == 1
    dead = {
        keys.BOUNCE_DEAD_META,
        keys.BOUNCE_DEAD_WIRE,
        keys.BOUNCE_DEAD_INDEX,
        keys.BOUNCE_INGESTING,
        keys.BOUNCE_INGESTING_DEADLINES,
    }
    assert len({key_slot(k.encode()) for k in dead}) == 1


def test_an_idempotency_key_names_its_shard() -> None:
    for n in range(50):
        name = keys.idempotency(f"owner-{n}", f"key:{n}")
        assert keys.TAGS[keys.shard_of_key(name)] in name
    assert keys.idempotency("a", "x:k") != keys.idempotency("a:x", "k")
