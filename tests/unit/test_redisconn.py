"""Cluster URLs: what they name, and what is refused with a clear error."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.redisconn import ReplicaWait, cluster_nodes, is_cluster
from config.settings import ConfigurationError, Settings
from tests.support.env import SECRET


def test_a_cluster_url_names_its_seed_nodes_and_credentials() -> None:
    url = "rediss+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7001,[fd00::3]:7002"
    assert is_cluster(url) and not is_cluster("redis://10.0.0.1:6379/0")
    nodes, options = cluster_nodes(url)
    assert nodes == [("10.0.0.1", 7000), ("10.0.0.2", 7001), ("fd00::3", 7002)]
    assert options == {"username": "app", "password": "s3cret", "ssl": True}


@pytest.mark.parametrize(
    "url",
    ["redis+cluster://10.0.0.1", "redis+cluster://10.0.0.1:7000,:7001", "redis+cluster://h:1/3"],
)
def test_a_malformed_cluster_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="MAILDISPATCH_REDIS_URL"):
        cluster_nodes(url)


def test_a_cluster_cannot_be_the_broker() -> None:
    with pytest.raises(ValidationError, match="cannot be the Celery broker"):
        Settings(broker_url="redis+cluster://10.0.0.1:7000", secret_key=SECRET)  # type: ignore[arg-type]


def test_writes_wait_for_a_replica_on_a_cluster_only() -> None:
    cluster = Settings(
        broker_url="amqp://guest:guest@127.0.0.1:5672//",
        redis_url="redis+cluster://10.0.0.1:7000",
        secret_key=SECRET,  # type: ignore[arg-type]
    )
    assert ReplicaWait.of(cluster) == ReplicaWait(1, 500)
    assert ReplicaWait.of(cluster.model_copy(update={"redis_wait_replicas": 0})) is None
    single = Settings(broker_url="redis://127.0.0.1:6379/0", secret_key=SECRET)  # type: ignore[arg-type]
    assert ReplicaWait.of(single) is None
