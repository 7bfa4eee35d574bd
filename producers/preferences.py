"""Owners' preferred channels as producers read them: asked of Redis once, then kept until Redis
says they changed.

A job that names no channel goes to its owner's preferred one, which worker/accounts/manage.py
mirrors into the Redis hash ``config.keys.PREFERRED_CHANNEL``. Asked on every call, it cost a
``send()`` one of its two round trips to Redis (~120 of ~290 µs of wall time and ~75 µs of CPU
on the Redis broker, idle machine). The answers are kept instead, under Redis' own invalidation
(client tracking, RESP3, broadcast mode for this one key): a connection of the producer's own
asks Redis to tell it of every write to the hash; Redis queues that notice while it runs the
write, before it answers the writer, and every lookup first reads what notices arrived (one
non-blocking poll of that connection) and forgets all it knew on any of them. So a ``send()``
made after ``accounts prefer`` has returned uses the new channel. The watch is opened before
any answer is kept; when it drops (a restart, a network error) everything known is forgotten
and the next lookup opens it again (a forked child opens its own).

redis-py has this built in (``cache_config``), but only for Redis 7.4 and later; tracking
itself is Redis 6's. On a Redis Cluster the hash's slot can move to another node, which a watch
on one node would not follow: there every lookup asks, as before.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import redis

from config import keys
from config.channels import DEFAULT_CHANNEL
from config.redisconn import SyncState, clustered

#: owners whose preference is kept at most (all are forgotten past it: a new start)
MOST_KEPT = 100_000


class Preferences:
    """The preferred channel of owners, read through ``client`` (the producer's state Redis)."""

    def __init__(self, client: SyncState) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._known: dict[str, str] = {}
        self._watch: Any = None  # a redis-py Connection with tracking on, or None
        self._pid = os.getpid()  # the process the watch belongs to
        self._keeps = not clustered(client)

    def of(self, owners: Sequence[str]) -> dict[str, str]:
        """Each owner's preferred channel (``msc`` when none is set)."""
        with self._lock:
            kept = self._watching()
            missing = [o for o in owners if o not in self._known] if kept else list(owners)
            if missing:
                found = self._client.hmget(keys.PREFERRED_CHANNEL, missing)
                answers = {
                    o: (p.decode() if isinstance(p, bytes) else p) if p else str(DEFAULT_CHANNEL)
                    for o, p in zip(missing, found, strict=True)
                }
                if not kept:
                    return answers
                if len(self._known) + len(answers) > MOST_KEPT:
                    self._known.clear()
                self._known.update(answers)
            return {o: self._known[o] for o in owners}

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _watching(self) -> bool:
        """Whether what is known may be used: the watch is open and every notice it brought
        has been read (each one forgets everything). Opens the watch when it is not open."""
        if not self._keeps:
            return False
        if self._pid != os.getpid():  # a forked child: the parent's socket is not its own
            self._known.clear()
            self._watch, self._pid = None, os.getpid()
        try:
            if self._watch is None:
                self._known.clear()
                self._watch = self._open()
            while self._watch.can_read(timeout=0):
                self._watch.read_response(push_request=True)
                self._known.clear()
            return True
        except redis.RedisError:
            self._drop()
            return False

    def _open(self) -> Any:
        pool = self._client.connection_pool
        conn = pool.connection_class(**(pool.connection_kwargs | {"protocol": 3}))
        try:
            conn.connect()
            conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", keys.PREFERRED_CHANNEL)
            conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        return conn

    def _drop(self) -> None:
        self._known.clear()
        if self._watch is not None:
            self._watch.disconnect()
            self._watch = None
