"""A Redis Cluster master killed under load: its replica takes over, and every job is still
delivered; a job is sent twice only when it was in delivery at the time (the same Message-ID,
as README's failover paragraph says), never lost."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from config import keys
from tests.integration.test_msc_delivery import job
from tests.support.fleet import Fleet
from tests.support.rabbit import amqp_url, private_vhost
from tests.support.redis_cluster import RedisCluster
from tests.support.relay import Relay
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.e2e

JOBS = 1500


def test_a_master_killed_mid_run_loses_no_job(tmp_path: Path) -> None:
    relay = Relay(free_port()).start()
    relay.handler.delay = 0.01
    try:
        with (
            RedisCluster(masters=3, replicas=1, node_timeout_ms=1000) as cluster,
            private_vhost() as vhost,
        ):
            fleet = Fleet(
                tmp_path,
                relay_url=relay.url,
                broker_url=amqp_url(vhost),
                env={"MAILDISPATCH_REDIS_URL": cluster.url},
            )
            try:
                _run(fleet, cluster, relay)
            finally:
                fleet.close()
    finally:
        relay.stop()


def _run(fleet: Fleet, cluster: RedisCluster, relay: Relay) -> None:
    fleet.scheduler()
    fleet.worker("mail.msc", concurrency=2, pool="prefork")
    d = fleet.dispatcher
    ids = d.send_many([job(f"bulk{i}@example.org") for i in range(JOBS)])
    wait_for(lambda: len(relay.handler.messages) >= JOBS // 4, 60, 0.01, "a quarter sent")
    # the master serving the first shard: a third of the jobs' state is on it
    victim = cluster.master_for_slot(fleet.redis.keyslot(keys.schedule(0)))
    in_flight = fleet.in_state(ids, "sending")
    cluster.kill(victim)
    # producers go on through the failover: their calls wait it out (transient errors)
    during = [d.send(job(f"during{i}@example.org")) for i in range(20)]
    took = cluster.wait_failover(victim, timeout=20)
    after = [d.send(job(f"after{i}@example.org")) for i in range(20)]
    everything = [*ids, *during, *after]
    states = fleet.wait_final(everything, 120)
    assert set(states.values()) == {"sent"}, collections.Counter(states.values())
    counts = relay.handler.by_message_id()
    assert len(counts) == len(everything), "a job was lost"
    twice = sum(counts.values()) - len(counts)
    # in delivery when the master died (claims of the next moments included): at most those
    assert twice <= in_flight + 2 * 128, (twice, in_flight)
    assert took < 15
