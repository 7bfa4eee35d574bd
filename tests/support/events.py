"""The event streams as tests read them: every shard's, merged by entry id."""

from __future__ import annotations

import json
from typing import Any

import redis

from config import keys

Entry = tuple[bytes, dict[bytes, bytes]]


def entries(client: redis.Redis) -> list[Entry]:
    """Every entry (id, fields) of every shard's stream, oldest first (the feed's order)."""
    found: list[tuple[tuple[int, int, int], Entry]] = []
    for n, stream in enumerate(keys.EVENTS):
        read: list[Entry] = client.xrange(stream)  # type: ignore[assignment]  # bytes replies
        for entry_id, fields in read:
            ms, _, seq = entry_id.partition(b"-")
            found.append(((int(ms), int(seq), n), (entry_id, fields)))
    return [entry for _, entry in sorted(found, key=lambda e: e[0])]


def all_events(client: redis.Redis) -> list[dict[str, Any]]:
    """Every event of every shard's stream, decoded, oldest first."""
    return [json.loads(fields[b"d"]) for _, fields in entries(client)]
