"""One SQLite file serves one machine: a fleet on several hosts needs PostgreSQL.

Every worker process and scheduler notes its host in Redis (``config.keys.FLEET_HOSTS``: host ->
last seen) when it starts and about once a minute after. A worker or scheduler that starts with
a SQLite store while another host of the same fleet was seen in the last
:data:`SEEN_WITHIN` seconds refuses to start, naming the other host: each machine would write
its own file, and Failed Sends, accounts and history would silently differ between them. The
host is the machine's name unless ``MAILDISPATCH_HOST_ID`` names it (containers whose host
names change at every start should set it).
"""

from __future__ import annotations

import socket
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from config import keys
from config.redisconn import connect
from config.settings import ConfigurationError, Settings

#: a host not seen for this long has left the fleet
SEEN_WITHIN = 600.0
#: how often a running process notes its host again
BEAT_EVERY = 60.0


def host_id(settings: Settings) -> str:
    """This machine's name in the fleet."""
    return settings.host_id or socket.gethostname()


def others(client: redis.Redis, settings: Settings, now: float | None = None) -> list[str]:
    """The fleet's other hosts seen within :data:`SEEN_WITHIN`."""
    now = time.time() if now is None else now
    me = host_id(settings)
    seen = client.hgetall(keys.FLEET_HOSTS)
    found = []
    for raw_host, raw_at in seen.items():
        host = raw_host.decode() if isinstance(raw_host, bytes) else str(raw_host)
        try:
            at = float(raw_at)
        except ValueError:
            continue
        if host != me and now - at < SEEN_WITHIN:
            found.append(host)
    return sorted(found)


def note(client: redis.Redis | aioredis.Redis, settings: Settings) -> Any:
    """This host is part of the fleet now (with an asyncio client: the awaitable to await)."""
    return client.hset(keys.FLEET_HOSTS, host_id(settings), repr(time.time()))


def check_and_note(settings: Settings) -> None:
    """Refuse a SQLite store shared across hosts (ConfigurationError), then note this host."""
    client = connect(settings.state_redis_url, socket_timeout=10)
    try:
        if settings.database_url.startswith("sqlite"):
            elsewhere = others(client, settings)
            if elsewhere:
                raise ConfigurationError(
                    f"this fleet also runs on {', '.join(elsewhere)}: a SQLite store "
                    f"({settings.database_url}) serves one machine only; set "
                    "MAILDISPATCH_DATABASE_URL to a PostgreSQL database shared by every host "
                    "(or MAILDISPATCH_HOST_ID if this is the same machine under another name)"
                )
        note(client, settings)
    finally:
        client.close()
