"""What ``bounce-poll`` does with a message it cannot take: skip it, keep a note, go on.

A message over ``MAILDISPATCH_BOUNCE_POLL_MAX_BYTES`` (its ``RFC822.SIZE``, checked before any
fetch), one the server refuses to hand out (``FETCH`` answered ``NO``/``BAD``), and one whose
fetch broke the connection twice are skipped: a dead-letter entry notes the mailbox, UID, size and
reason with what could be fetched (the whole message, or the start of its header), then the
message is flagged ``\\Seen \\Flagged`` and left in the mailbox, never deleted. It is not taken
again (the poller searches ``UNSEEN``), so it cannot hold back the messages after it.

A fetch that breaks the connection cannot be skipped on the spot: the round ends. The count of
such failures is kept per message in Redis, and the next rounds take the messages that never
failed first, the failing one last, and skip it once it failed ``MAX_FETCH_FAILURES`` times.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import redis
import structlog

from config import keys
from worker.bounces.intake.deadletter import DeadLetters

__all__ = ["MAX_FETCH_FAILURES", "SkipBook"]

log = structlog.get_logger("maildispatch.bounces.poll")

#: fetches of one message that may break the connection before it is skipped
MAX_FETCH_FAILURES = 2
#: how long a failure count is kept (a message flagged by hand, or expunged, is then forgotten)
FAILURES_TTL = 7 * 86400


class SkipBook:
    """Fetch failures per message, and the dead-letter notes of skipped messages."""

    def __init__(self, client: redis.Redis, mailbox: str) -> None:
        self.redis = client
        self.dead = DeadLetters(client)
        self.mailbox = mailbox
        self.validity = ""

    def _field(self, uid: bytes) -> str:
        return f"{self.mailbox}|{self.validity}|{uid.decode()}"

    def failures(self, uids: list[bytes]) -> dict[bytes, int]:
        """How often each message's fetch broke the connection (all 0 when Redis is away: the
        round goes on and publishing, not this, decides whether it can)."""
        if not uids:
            return {}
        try:
            counts = self.redis.hmget(keys.BOUNCE_POLL_FAILURES, [self._field(u) for u in uids])
        except redis.RedisError as exc:
            log.warning("bounce_poll_failures_unread", error=type(exc).__name__)
            return dict.fromkeys(uids, 0)
        return {uid: int(count or 0) for uid, count in zip(uids, counts, strict=True)}

    def failed(self, uid: bytes, size: int | None) -> None:
        """Note that fetching ``uid`` (of ``size`` bytes, when known) broke the connection
        (best effort: the round is ending)."""
        try:
            pipe = self.redis.pipeline()
            pipe.hincrby(keys.BOUNCE_POLL_FAILURES, self._field(uid), 1)
            if size is not None:
                pipe.hset(keys.BOUNCE_POLL_FAILURES, self._field(uid) + "#size", size)
            pipe.expire(keys.BOUNCE_POLL_FAILURES, FAILURES_TTL)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("bounce_poll_failure_unnoted", uid=uid.decode(), error=type(exc).__name__)

    def size(self, uid: bytes) -> int | None:
        """The size noted with the message's failures (None when unknown or unreadable)."""
        try:
            value = self.redis.hget(keys.BOUNCE_POLL_FAILURES, self._field(uid) + "#size")
        except redis.RedisError:
            return None
        return int(value) if value else None

    def forget(self, uid: bytes) -> None:
        """The message was taken or skipped: its failures no longer matter."""
        field = self._field(uid)
        self.redis.hdel(keys.BOUNCE_POLL_FAILURES, field, field + "#size")

    def note(
        self,
        uid: bytes,
        size: int | None,
        why: str,
        *,
        raw: bytes | None = None,
        head: bytes | None = None,
        error: str = "",
    ) -> str:
        """Keep a skipped message's dead-letter entry; raises redis.RedisError when it cannot
        (the caller then leaves the message untouched)."""
        wire: dict[str, Any] = {"v": 1, "source": "imap", "size": size}
        if raw is not None:  # the whole message: ``bounces dead retry`` can ingest it
            wire |= {"mail_from": "", "rcpt_tos": [], "raw": base64.b64encode(raw).decode()}
        elif head is not None:  # only the start of its header: for the operator to look at
            wire["head"] = base64.b64encode(head).decode()
        details: dict[str, Any] = {"mailbox": self.mailbox, "uid": uid.decode()}
        if error:
            details["error"] = error[:300]
        entry = self.dead.add(wire, why, **details)
        with contextlib.suppress(redis.RedisError):  # kept: a stale count no longer matters
            self.forget(uid)
        log.warning(
            "bounce_poll_skipped",
            why=why,
            uid=uid.decode(),
            size=size,
            mailbox=self.mailbox,
            dead_letter=entry,
            error=error[:300] or None,
        )
        return entry
