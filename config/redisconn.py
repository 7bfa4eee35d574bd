"""Clients of the state Redis: one server, or a Redis Cluster (``redis+cluster://h:p,h:p``).

Every key of a job carries its shard's hash tag (config/keys.py), so a script about jobs of one
shard runs on one slot. Callers that handle many jobs at once split them with :func:`by_shard`:
one group per shard on a cluster, one group in all on a single server (where a script may touch
any keys, and fewer calls cost less).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
import structlog
from hiredis import pack_command
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster

from config.settings import ConfigurationError, Settings

T = TypeVar("T")

log = structlog.get_logger("maildispatch.redis")

#: Redis errors a new attempt may get past: a restart (BusyLoadingError is a ConnectionError), a
#: reset connection, a timeout, a cluster failing over (its masters answer CLUSTERDOWN until a
#: replica of the lost one is promoted), a slot that moved meanwhile (MOVED, ASK)
TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,
)

#: the URL scheme of a cluster: ``redis+cluster://host:port[,host:port...][/0]``
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

#: a client of the state Redis: a ``redis.Redis`` or a ``RedisCluster``, typed as the first
#: (the cluster clients have the same command methods; code that must tell them apart asks
#: :func:`clustered`)
SyncState = redis.Redis
AsyncState = aioredis.Redis


def is_cluster(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The seed nodes of a cluster URL and the connection options it carries."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    auth, hosts = (netloc[0], netloc[1]) if len(netloc) == 2 else ("", netloc[0])
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(
                f"MAILDISPATCH_REDIS_URL: {item!r} is not host:port "
                "(a cluster is redis+cluster://host:port[,host:port...])"
            )
        nodes.append((host.strip("[]"), int(port)))
    options: dict[str, Any] = {}
    if auth:
        user, _, password = auth.partition(":")
        options["username"] = user or None
        options["password"] = password or None
    if parts.scheme.lower().startswith("rediss"):
        options["ssl"] = True
    if parts.path.strip("/") not in ("", "0"):
        raise ConfigurationError("MAILDISPATCH_REDIS_URL: a Redis Cluster has database 0 only")
    return nodes, options


def connect(url: str, **options: Any) -> SyncState:
    """A client of the state Redis at ``url`` (a blocking one)."""
    if not is_cluster(url):
        return redis.Redis.from_url(url, **options)
    nodes, extra = cluster_nodes(url)
    seeds = [ClusterNode(h, p) for h, p in nodes]  # type: ignore[no-untyped-call]
    return cast(SyncState, RedisCluster(startup_nodes=seeds, **(extra | options)))


def connect_async(url: str, *, blocking: bool = False, **options: Any) -> AsyncState:
    """A client of the state Redis at ``url`` for an event loop; ``blocking``: a caller waits
    for a free connection (up to ``max_connections``) instead of failing (one server only: a
    cluster client opens up to ``max_connections`` per node)."""
    if not is_cluster(url):
        if blocking:
            pool = aioredis.BlockingConnectionPool.from_url(url, timeout=30, **options)
            return aioredis.Redis(connection_pool=pool)
        return aioredis.Redis.from_url(url, **options)
    nodes, extra = cluster_nodes(url)
    seeds = [AsyncClusterNode(h, p) for h, p in nodes]
    return cast(AsyncState, AsyncRedisCluster(startup_nodes=seeds, **(extra | options)))


def clustered(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster | AsyncRedisCluster)


def by_shard(client: Any, items: Iterable[T], shard_of: Callable[[T], int]) -> list[list[T]]:
    """``items`` in groups that one script may take: one per shard on a cluster, else one."""
    listed = list(items)
    if not clustered(client):
        return [listed] if listed else []
    groups: dict[int, list[T]] = {}
    for item in listed:
        groups.setdefault(shard_of(item), []).append(item)
    return list(groups.values())


def pool_for(client: SyncState, key: str) -> Any:
    """The connection pool of the server holding ``key`` (a blocking client): for commands
    packed and pipelined by hand."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        return client.get_redis_connection(node).connection_pool
    return client.connection_pool


@dataclass(frozen=True)
class ReplicaWait:
    """``WAIT replicas timeout`` after writes on a cluster master that has replicas."""

    replicas: int
    timeout_ms: int

    @classmethod
    def of(cls, settings: Settings) -> ReplicaWait | None:
        """What ``settings`` ask for (None: a single server, or no wait)."""
        if not is_cluster(settings.state_redis_url) or settings.redis_wait_replicas <= 0:
            return None
        return cls(settings.redis_wait_replicas, max(int(settings.redis_wait_timeout * 1000), 1))

    def command(self) -> tuple[Any, ...]:
        """The command, to pack after the writes on the same connection."""
        return ("WAIT", self.replicas, self.timeout_ms)

    def packed(self) -> bytes:
        """:meth:`command`, packed by hiredis."""
        return bytes(pack_command(self.command()))

    def on(self, client: Any, key: Any) -> ReplicaWait | None:
        """This wait where the master serving ``key`` has a replica (None elsewhere: a master
        without one would only time out)."""
        if not clustered(client):
            return None
        served = client.nodes_manager.slots_cache.get(client.keyslot(key)) or ()
        return self if len(served) > 1 else None

    def check(self, acked: Any) -> None:
        """Log a ``WAIT`` that ended with fewer replicas than asked (one down, or behind)."""
        if int(acked) < self.replicas:
            log.warning("redis_replica_behind", replicas=self.replicas, timeout_ms=self.timeout_ms)


def exchange(
    client: SyncState, key: str, commands: Sequence[tuple[Any, ...]], wait: ReplicaWait | None
) -> list[Any]:
    """``commands`` packed by hiredis (redis-py packs each argument in Python) and sent on one
    connection of the server holding ``key``, then ``WAIT`` when asked; their replies (an error
    reply raised)."""
    words = list(commands)
    wait = wait.on(client, key) if wait is not None else None
    if wait is not None:
        words.append(wait.command())
    pool = pool_for(client, key)
    conn: Any = pool.get_connection()
    try:
        conn.send_packed_command([pack_command(c) for c in words])
        replies = [conn.read_response() for _ in words]
        if wait is not None:
            wait.check(replies[-1])
    except BaseException:
        conn.disconnect()  # a reply may be left unread: not reusable
        raise
    finally:
        pool.release(conn)
    return replies[: len(commands)]
