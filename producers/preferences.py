"""Owners' preferred channels as producers read them: asked of Redis once, then kept until Redis
says they changed.

A job that names no channel goes to its owner's preferred one, which worker/accounts/manage.py
mirrors into the Redis hash ``config.keys.PREFERRED_CHANNEL``. Asked on every call, it cost a
``send()`` one of its two round trips to Redis (~120 of ~290 µs of wall time and ~75 µs of CPU
on the Redis broker, idle machine). The answers are kept instead, under Redis' own invalidation
(client tracking, RESP3, broadcast mode for this one key): a connection of the producer's own
asks Redis to tell it of every write to the hash; Redis queues that notice while it runs the
write, before it answers the writer, and every lookup first reads what notices arrived (one
non-blocking poll of that connection) and forgets all it knew on any of them (as does a notice
read ahead of an answer on it). A server that dies without closing the connection sends no
notice: the watch is pinged every ``CHECK_EVERY`` seconds before what it vouches for is used. So a ``send()``
made after ``accounts prefer`` has returned uses the new channel. The watch is opened before
any answer is kept; when it drops (a restart, a network error) everything known is forgotten
and the next lookup opens it again (a forked child opens its own).

The preferences are read on the watch itself: on a Redis Cluster, from the node it watches.
When the hash's slot moves, that node deletes it (a notice) and answers the next read with a
redirection: the watch is dropped, the read goes through the cluster client, and the next
lookup watches the node that holds the hash now. When no watch can be opened (Redis away, an
ACL user without ``CLIENT``), every lookup asks, as before, and a new watch is tried a second
later. redis-py has such a cache built in (``cache_config``), but only for Redis 7.4 and later;
tracking itself is Redis 6's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis

from config import keys
from config.channels import DEFAULT_CHANNEL
from config.redisconn import SyncState, clustered

#: owners whose preference is kept at most (all are forgotten past it: a new start)
MOST_KEPT = 100_000
#: seconds between attempts to open the watch (Redis away; a user that may not run CLIENT)
REOPEN_AFTER = 1.0
#: seconds between checks that the watch's server still answers; and the longest it may take
CHECK_EVERY = 5.0
WATCH_TIMEOUT = 5.0


class Preferences:
    """The preferred channel of owners, kept by a producer; ``client`` is its state Redis."""

    def __init__(self, client: SyncState) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._known: dict[str, str] = {}
        self._watch: Any = None  # a redis-py Connection with tracking on, or None
        self._pid = os.getpid()  # the process the watch belongs to
        self._reopen_at = 0.0  # (monotonic) no new watch before, after one could not be opened
        self._checked = 0.0  # (monotonic) when the watch last answered

    def of(self, owners: Sequence[str]) -> dict[str, str]:
        """Each owner's preferred channel (``msc`` when none is set)."""
        with self._lock:
            try:
                watch = self._watching()
                if watch is not None:
                    missing = [o for o in owners if o not in self._known]
                    if missing:
                        # asked on the watch itself: on a cluster, of the node it watches, which
                        # answers MOVED (and the watch is dropped) once the hash lives elsewhere
                        watch.send_command("HMGET", keys.PREFERRED_CHANNEL, *missing)
                        self._keep(missing, watch.read_response())
                    return {o: self._known[o] for o in owners}
            except redis.RedisError:
                self._drop()
        # no watch (Redis away, a slot moving, a user without CLIENT): asked as every call once
        # was, through the client, which retries, follows redirections and raises what the
        # caller handles
        found = self._client.hmget(keys.PREFERRED_CHANNEL, list(owners))
        return {o: _channel(p) for o, p in zip(owners, found, strict=True)}

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _watching(self) -> Any:
        """The watch, open, with every notice it brought read (each one forgets everything);
        None for ``REOPEN_AFTER`` seconds after it could not be opened."""
        if self._pid != os.getpid():  # a forked child: the parent's socket is not its own
            self._known.clear()
            self._watch, self._pid = None, os.getpid()
        if self._watch is None:
            if time.monotonic() < self._reopen_at:
                return None
            self._known.clear()
            try:
                self._watch = self._open()
            except redis.RedisError:
                self._reopen_at = time.monotonic() + REOPEN_AFTER
                raise
        if time.monotonic() - self._checked > CHECK_EVERY:
            # a server that died without closing the connection (a lost host) sends no notice:
            # what is known is used only while the watch answers
            self._watch.send_command("PING")
            self._watch.read_response()
            self._checked = time.monotonic()
        while self._watch.can_read(timeout=0):
            self._watch.read_response(push_request=True)  # a notice: _forget has run
        return self._watch

    def _open(self) -> Any:
        """A connection to the server (the cluster node) that holds the hash, told to report
        every write to it."""
        if clustered(self._client):
            node = self._client.get_node_from_key(keys.PREFERRED_CHANNEL)  # type: ignore[attr-defined]
            pool = self._client.get_redis_connection(node).connection_pool  # type: ignore[attr-defined]
        else:
            pool = self._client.connection_pool
        options = pool.connection_kwargs | {"protocol": 3}
        options["socket_timeout"] = min(
            options.get("socket_timeout") or WATCH_TIMEOUT, WATCH_TIMEOUT
        )
        conn = pool.connection_class(**options)
        # every notice read on it, also one that arrives ahead of a read's answer (redis-py reads
        # it and goes on to the answer), forgets what is known
        conn._parser.set_invalidation_push_handler(self._forget)
        try:
            conn.connect()
            conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", keys.PREFERRED_CHANNEL)
            conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        self._checked = time.monotonic()
        return conn

    def _forget(self, notice: Any) -> None:
        self._known.clear()

    def _keep(self, owners: Sequence[str], found: Sequence[Any]) -> None:
        if len(self._known) + len(owners) > MOST_KEPT:
            self._known.clear()
        self._known.update({o: _channel(p) for o, p in zip(owners, found, strict=True)})

    def _drop(self) -> None:
        self._known.clear()
        if self._watch is not None:
            self._watch.disconnect()
            self._watch = None


def _channel(found: Any) -> str:
    if not found:
        return str(DEFAULT_CHANNEL)
    return found.decode() if isinstance(found, bytes) else str(found)
