"""What a Redis database and a SQLite file hold, as bytes to search (for a secret that must not be
there)."""

from __future__ import annotations

from pathlib import Path

import redis


def redis_dump(client: redis.Redis) -> bytes:
    """Every key and value of a Redis database, as bytes to search."""
    out: list[bytes] = []
    for key in client.scan_iter("*", count=1000):
        out.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            out.append(client.get(key) or b"")
        elif kind == "hash":
            for k, v in client.hgetall(key).items():
                out += [k, v]
        elif kind == "list":
            out += client.lrange(key, 0, -1)
        elif kind == "set":
            out += list(client.smembers(key))
        elif kind == "zset":
            out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
    return b"\n".join(out)


def database_bytes(path: Path) -> bytes:
    """The SQLite file and its WAL/SHM companions (recent writes live in the WAL)."""
    return b"".join(
        p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")) if p.is_file()
    )
