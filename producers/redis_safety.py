"""Are the Redis servers that hold job state and the queues configured not to lose them?

Without the append-only file a Redis restart forgets every job state, scheduled retry,
idempotency key and queued task message since the last snapshot; with an evicting
``maxmemory-policy`` (``allkeys-*``, ``volatile-*``) Redis drops keys under memory pressure,
the same keys first (they carry TTLs). Neither shows until it has happened, so the worker (at
start) and ``/healthz`` ask with ``CONFIG GET``: unsafe settings are a loud warning, and with
``MAILDISPATCH_STRICT_REDIS=true`` a refusal (the worker does not start, ``/healthz`` answers
503). Managed Redis services often disable or rename ``CONFIG``: then the check says it could
not check, and does not refuse.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
import structlog
from redis.cluster import RedisCluster

from config.redisconn import connect
from config.settings import Settings

log = structlog.get_logger("maildispatch.redis_safety")

SAFE_POLICY = "noeviction"


class RedisUnsafe(Exception):
    """Redis is configured to lose data, and the deployment asked to refuse that (strict)."""


@dataclass(frozen=True)
class RedisSafety:
    """What ``CONFIG GET`` said about one Redis: its problems, or that it could not ask."""

    role: str  # "redis" (job state, or "redis node <host:port>" of a cluster) or "broker"
    problems: tuple[str, ...] = ()
    unchecked: str | None = None  # why CONFIG could not be read

    @property
    def safe(self) -> bool:
        """Checked, and nothing found."""
        return not self.problems and self.unchecked is None

    def describe(self) -> str:
        """One line for logs and ``/healthz`` (no URL: it may hold a password)."""
        if self.unchecked is not None:
            return f"{self.role}: could not check its persistence settings ({self.unchecked})"
        return f"{self.role}: " + "; ".join(self.problems)


def inspect(client: redis.Redis, role: str = "redis") -> RedisSafety:
    """``appendonly`` and ``maxmemory-policy`` of one Redis; raises only on connection errors."""
    try:
        appendonly = client.config_get("appendonly").get("appendonly")
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.ResponseError as exc:  # CONFIG disabled, renamed, or not allowed (ACL)
        text = str(exc).split("\n", 1)[0][:120]
        return RedisSafety(role, unchecked=f"CONFIG GET refused: {text}")
    problems: list[str] = []
    if isinstance(appendonly, bytes):
        appendonly = appendonly.decode()
    if isinstance(policy, bytes):
        policy = policy.decode()
    if appendonly is None or policy is None:
        return RedisSafety(role, unchecked="CONFIG GET did not return the settings")
    if appendonly != "yes":
        problems.append(
            f"appendonly is {appendonly}: a restart loses job state, retries, idempotency keys "
            "and queued messages (set appendonly yes)"
        )
    if policy != SAFE_POLICY:
        problems.append(
            f"maxmemory-policy is {policy}: Redis evicts keys when full, job state and queued "
            f"messages among them (set maxmemory-policy {SAFE_POLICY})"
        )
    return RedisSafety(role, tuple(problems))


def redis_urls(settings: Settings) -> dict[str, str]:
    """The Redis servers that must keep their data: job state, and the broker when it is Redis."""
    urls = {"redis": settings.state_redis_url}
    redis_broker = settings.broker_url.startswith(("redis://", "rediss://", "unix://"))
    if redis_broker and settings.broker_url != settings.state_redis_url:
        urls["broker"] = settings.broker_url
    return urls


def inspect_all(settings: Settings, timeout: float = 3.0) -> list[RedisSafety]:
    """Every Redis of the deployment; an unreachable one is reported as unchecked."""
    found = []
    for role, url in redis_urls(settings).items():
        client = connect(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            if isinstance(client, RedisCluster):  # every node (a replica is promoted one day)
                for node in client.get_nodes():
                    server = client.get_redis_connection(node)
                    found.append(inspect(server, f"{role} node {node.name}"))
            else:
                found.append(inspect(client, role))
        except redis.RedisError as exc:
            found.append(RedisSafety(role, unchecked=f"unreachable ({type(exc).__name__})"))
        finally:
            client.close()
    return found


def health_check(settings: Settings) -> str | None:
    """For ``/healthz``: None when safe, else a warning text; RedisUnsafe when strict."""
    results = inspect_all(settings)
    unsafe = [r.describe() for r in results if r.problems]
    if unsafe and settings.strict_redis:
        raise RedisUnsafe("; ".join(unsafe) + " (MAILDISPATCH_STRICT_REDIS)")
    return " | ".join(r.describe() for r in results if not r.safe) or None


def startup_check(settings: Settings) -> None:
    """At a worker's start: log what is unsafe or unchecked; RedisUnsafe when strict."""
    unsafe = []
    for result in inspect_all(settings):
        if result.problems:
            unsafe.append(result.describe())
            log.error(
                "redis_unsafe",
                role=result.role,
                problems=list(result.problems),
                strict=settings.strict_redis,
                hint="set appendonly yes and maxmemory-policy noeviction"
                + ("" if settings.strict_redis else "; MAILDISPATCH_STRICT_REDIS=true refuses"),
            )
        elif result.unchecked is not None:
            log.warning("redis_unchecked", role=result.role, reason=result.unchecked)
    if unsafe and settings.strict_redis:
        raise RedisUnsafe("; ".join(unsafe) + " (MAILDISPATCH_STRICT_REDIS)")
