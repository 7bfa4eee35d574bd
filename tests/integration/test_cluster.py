"""A fleet with no single Redis: job state on a Redis Cluster (3 masters, 3 replicas), RabbitMQ
as the broker. What users rely on holds there as on one server: every job delivered once,
idempotency keys, scheduled mail, cancels, the event stream, a dead worker's jobs coming back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from config import keys
from config.redisconn import connect
from producers.client import Dispatcher
from producers.preferences import Preferences
from tests.integration.test_msc_delivery import job, wait_final
from tests.support.api import bearer, new_key, serve
from tests.support.events import all_events
from tests.support.fleet import FAST_RECOVERY, Fleet, running_fleet
from tests.support.rabbit import amqp_url, private_vhost
from tests.support.redis_cluster import RedisCluster
from tests.support.relay import Relay
from tests.support.services import wait_for
from worker.accounts.manage import mirror_preference
from worker.api.app import create_app
from worker.store.db import Store

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    """Three masters with a replica each, on loopback."""
    with RedisCluster(masters=3, replicas=1) as started:
        yield started


@pytest.fixture(scope="module")
def cluster_fleet(
    cluster: RedisCluster, session_relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """An MSC worker and the scheduler on RabbitMQ, job state on the cluster; a dead worker's
    batches expire 2 s after it died (FAST_RECOVERY), not a minute."""
    with (
        private_vhost() as vhost,
        running_fleet(
            tmp_path_factory.mktemp("cluster"),
            relay_url=session_relay.url,
            broker_url=amqp_url(vhost),
            env={"MAILDISPATCH_REDIS_URL": cluster.url, **FAST_RECOVERY},
            pool="prefork",
            concurrency=2,
        ) as fleet,
    ):
        yield fleet


@pytest.fixture
def fleet(cluster_fleet: Fleet, relay: Relay) -> Fleet:
    """The cluster fleet, with an empty relay and no job state left from other tests."""
    cluster_fleet.clear_job_state()
    return cluster_fleet


def test_single_sends_and_batches_are_delivered_once_with_state_on_every_master(
    fleet: Fleet, relay: Relay, cluster: RedisCluster
) -> None:
    d = Dispatcher(fleet.settings)
    singles = [d.send(job(f"one{i}@example.org")) for i in range(40)]
    batch = d.send_many([job(f"many{i}@example.org") for i in range(300)])
    states = wait_final(d, [*singles, *batch])
    assert {s["state"] for s in states.values()} == {"sent"}
    counts = relay.handler.by_message_id()
    assert len(counts) == 340 and set(counts.values()) == {1}
    # the jobs' state is spread over the masters, as the shards are
    masters = [n for n in cluster.nodes if n.role == "master"]
    assert all(int(n.call("DBSIZE")) > 0 for n in masters)
    sent = [e for e in all_events(fleet.redis) if e["type"] == "message.sent"]
    assert {e["data"]["job_id"] for e in sent} == {str(i) for i in [*singles, *batch]}


def test_idempotency_keys_hold_across_shards(fleet: Fleet, relay: Relay) -> None:
    d = Dispatcher(fleet.settings)
    keyed = [job(f"k{i}@example.org", idempotency_key=f"order-{i}") for i in range(50)]
    first = d.send_many(keyed)
    again = d.send_many(keyed)  # the same keys: the same jobs, nothing new
    assert again == first
    assert d.send(keyed[7]) == first[7]
    wait_final(d, first)
    assert len(relay.handler.by_message_id()) == 50


def test_scheduled_mail_is_sent_when_due_and_a_cancelled_one_never(
    fleet: Fleet, relay: Relay
) -> None:
    d = Dispatcher(fleet.settings)
    due = datetime.now(UTC) + timedelta(seconds=2)
    later = [d.send(job(f"later{i}@example.org", send_at=due.isoformat())) for i in range(20)]
    cancelled = later[:5]
    assert [d.cancel(i) for i in cancelled] == ["cancelled"] * 5
    states = wait_final(d, later[5:], timeout=30)
    assert {s["state"] for s in states.values()} == {"sent"}
    assert {(d.status(i) or {}).get("state") for i in cancelled} == {"cancelled"}
    delivered = {m.rcpt_tos[0] for m in relay.handler.messages}
    assert not delivered & {f"later{i}@example.org" for i in range(5)}
    assert fleet.counters().get("jobs_cancelled") == 5
    assert all(fleet.redis.zcard(name) == 0 for name in keys.SCHEDULES)


def test_a_killed_workers_jobs_come_back_through_the_cluster(
    cluster_fleet: Fleet, relay: Relay
) -> None:
    fleet = cluster_fleet
    fleet.clear_job_state()
    relay.handler.delay = 0.05  # slow enough that the kill lands mid-batch
    d = Dispatcher(fleet.settings)
    ids = d.send_many([job(f"crash{i}@example.org") for i in range(200)])
    wait_for(lambda: len(relay.handler.messages) >= 20, 30, 0.02, "20 sent")
    victim = next(p for p in fleet.procs if "worker" in p.log.name and p.popen.poll() is None)
    victim.kill9()
    in_flight = fleet.in_state(ids, "sending")
    assert in_flight > 0, "the kill did not land mid-batch"
    fleet.worker("mail.msc", concurrency=2, pool="prefork")
    states = fleet.wait_final(list(ids), 90)
    counts = relay.handler.by_message_id()
    assert len(counts) == 200, "a job was lost"
    assert sum(counts.values()) - len(counts) <= in_flight  # sent twice: only those in flight
    assert set(states.values()) == {"sent"}


def test_the_api_serves_sends_status_the_feed_and_metrics_from_the_cluster(
    fleet: Fleet, relay: Relay, cluster: RedisCluster
) -> None:
    store = Store(fleet.database_url)
    try:
        key = new_key(store, "cluster")
    finally:
        store.dispose()
    with serve(create_app(fleet.settings)) as url, httpx.Client(base_url=url, timeout=30) as http:
        waiting = http.get("/v1/events", params={"wait": 1}, headers=bearer(key))  # nothing yet
        assert waiting.status_code == 200 and waiting.json()["events"] == []
        sent = [
            http.post("/v1/messages", json=job(f"api{i}@example.org"), headers=bearer(key))
            for i in range(12)
        ]
        assert {r.status_code for r in sent} == {202}
        ids = [r.json()["id"] for r in sent]
        wait_for(
            lambda: all(
                http.get(f"/v1/messages/{i}", headers=bearer(key)).json().get("state") == "sent"
                for i in ids
            ),
            30,
            0.2,
            "the API's jobs sent",
        )
        # the feed merges the shards' streams: every job's message.sent, each once
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, object] = {"limit": 5, "wait": 0}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/v1/events", params=params, headers=bearer(key)).json()
            if not page["events"]:
                break
            seen += [e["data"]["job_id"] for e in page["events"] if e["type"] == "message.sent"]
            cursor = page["next_cursor"]
        assert sorted(seen) == sorted(ids)
        metrics = http.get("/metrics").text
        assert http.get("/healthz").json()["checks"]["redis_persistence"] == "ok"
        # every node is asked, replicas too (one is promoted one day)
        replica = next(n for n in cluster.nodes if n.role == "replica")
        replica.call("CONFIG", "SET", "appendonly", "no")
        try:
            unsafe = http.get("/healthz").json()["checks"]["redis_persistence"]
        finally:
            replica.call("CONFIG", "SET", "appendonly", "yes")
    assert f"redis node 127.0.0.1:{replica.port}: appendonly is no" in unsafe, unsafe
    assert 'maildispatch_deliveries_total{channel="msc",outcome="sent"}' in metrics


def _move_slot(cluster: RedisCluster, slot: int, to_port: int) -> None:
    """Move ``slot`` (and its keys) to the master on ``to_port``, as a resharding does."""
    source = cluster._node(cluster.master_for_slot(slot))
    target = cluster._node(to_port)
    target_id, source_id = target.call("CLUSTER", "MYID"), source.call("CLUSTER", "MYID")
    target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    for name in source.call("CLUSTER", "GETKEYSINSLOT", slot, 100):
        source.call("MIGRATE", "127.0.0.1", to_port, name, 0, 5000)
    for node in cluster.nodes:
        if node.alive and node.role == "master":
            node.call("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    wait_for(lambda: cluster.master_for_slot(slot) == to_port, timeout=10)


def test_producers_see_a_changed_preference_across_a_resharding(cluster: RedisCluster) -> None:
    """A producer keeps owners' preferred channels; on a cluster a change is seen at once, also
    after the hash's slot moved to another master (the producer follows it there)."""
    writer = connect(cluster.url)
    reader = connect(cluster.url)
    preferences = Preferences(reader)
    slot = int(writer.keyslot(keys.PREFERRED_CHANNEL))  # type: ignore[attr-defined]
    home = cluster.master_for_slot(slot)
    other = next(p for p in set(cluster.slot_map().values()) if p != home)

    def asked(port: int) -> int:
        stats = cluster._node(port).call("INFO", "commandstats")
        return int(stats.get("cmdstat_hmget", {}).get("calls", 0))

    try:
        writer.delete(keys.PREFERRED_CHANNEL)
        assert preferences.of(["acme"]) == {"acme": "msc"}
        for preferred in ("smtp", "gmail", "msc"):
            mirror_preference(writer, "acme", preferred)
            before = asked(home)
            assert [preferences.of(["acme"])["acme"] for _ in range(5)] == [preferred] * 5
            assert asked(home) - before == 1

        _move_slot(cluster, slot, other)
        for preferred in ("smtp", "gmail", "msc", "smtp"):
            mirror_preference(writer, "acme", preferred)
            assert [preferences.of(["acme"])["acme"] for _ in range(3)] == [preferred] * 3
        before = asked(other)
        assert preferences.of(["acme", "someone"]) == {"acme": "smtp", "someone": "msc"}
        assert preferences.of(["acme", "someone"]) == {"acme": "smtp", "someone": "msc"}
        assert asked(other) - before == 1  # kept from the node that holds the hash now
    finally:
        _move_slot(cluster, slot, home)
        writer.delete(keys.PREFERRED_CHANNEL)
        preferences.close()
        reader.close()
        writer.close()
