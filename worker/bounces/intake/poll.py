"""``maildispatch bounce-poll``: feed ``mail.bounces`` from an IMAP mailbox.

For operators whose bounces land in a mailbox rather than at ``bounce-server``. Each round
logs in, takes every unseen, undeleted message (``BODY.PEEK[]`` so that reading does not mark
it), enqueues it, and only once the broker has taken it flags it ``\\Deleted`` and expunges it
by UID (or, with ``--mark-seen``, flags it ``\\Seen``). A publish that fails ends the round with
the message untouched: it is taken again on the next round.

One message never holds back the others (worker/bounces/intake/pollskip.py): one over
``MAILDISPATCH_BOUNCE_POLL_MAX_BYTES`` (``RFC822.SIZE``, checked before fetching), one the server
will not hand out, one whose fetch broke the connection twice, is noted in the dead-letter store
and flagged ``\\Seen \\Flagged`` in place. A fetched message larger than
``MAILDISPATCH_BOUNCE_MAX_BYTES`` is queued with its quoted original cut, as ``bounce-server`` does.

URLs: ``imaps://user@host[:993]/MAILBOX`` (TLS), or ``imap://user@host[:143]/MAILBOX`` which
upgrades with STARTTLS; a server without STARTTLS is refused unless it is on loopback, so a
password never crosses a network in the clear. Certificates are verified (``--ca-file`` adds a
private CA).
"""

from __future__ import annotations

import contextlib
import imaplib
import ipaddress
import re
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import structlog

from config.settings import ConfigurationError
from worker.bounces.classify.truncate import truncate
from worker.bounces.intake.enqueue import BounceNotQueued, BouncePublisher, InboundMessage
from worker.bounces.intake.pollskip import MAX_FETCH_FAILURES, SkipBook

log = structlog.get_logger("maildispatch.bounces.poll")

_FETCH_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
#: how much of an oversized message's header is kept in its dead-letter note
HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class MailboxUrl:
    """Where to poll: ``imaps://user@host:port/MAILBOX``."""

    tls: bool
    host: str
    port: int
    user: str
    mailbox: str

    @classmethod
    def parse(cls, url: str) -> MailboxUrl:
        """Parse an ``imap://`` or ``imaps://`` URL (a password in it is refused)."""
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps"):
            raise ConfigurationError(
                f"--imap must be imaps://user@host/MAILBOX, not {parts.scheme}://"
            )
        if parts.password:
            raise ConfigurationError(
                "do not put the IMAP password in the URL (it would show in the process list); "
                "use MAILDISPATCH_BOUNCE_IMAP_PASSWORD or --password-stdin"
            )
        if not parts.hostname or not parts.username:
            raise ConfigurationError("--imap needs a user and a host: imaps://user@host/INBOX")
        tls = parts.scheme == "imaps"
        return cls(
            tls=tls,
            host=parts.hostname,
            port=parts.port or (993 if tls else 143),
            user=unquote(parts.username),
            mailbox=unquote(parts.path.lstrip("/")) or "INBOX",
        )

    def __str__(self) -> str:
        scheme = "imaps" if self.tls else "imap"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{self.mailbox}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Poller:
    """One IMAP mailbox feeding the bounce queue."""

    def __init__(
        self,
        url: MailboxUrl,
        password: str,
        publisher: BouncePublisher,
        *,
        mark_seen: bool = False,
        ca_file: str | None = None,
        timeout: float = 60.0,
        skips: SkipBook,
        max_bytes: int = 4 * 1024 * 1024,
        queue_max_bytes: int = 1024 * 1024,
    ) -> None:
        self.url = url
        self._password = password
        self.publisher = publisher
        self.skips = skips
        self.max_bytes = max_bytes
        self.queue_max_bytes = queue_max_bytes
        self._size_seen: int | None = None  # RFC822.SIZE of the message being taken
        self.mark_seen = mark_seen
        self.ssl_context = ssl.create_default_context(cafile=ca_file)
        self.timeout = timeout

    def connect(self) -> imaplib.IMAP4:
        """Log in (over TLS) and select the mailbox read-write."""
        conn: imaplib.IMAP4
        if self.url.tls:
            conn = imaplib.IMAP4_SSL(
                self.url.host, self.url.port, ssl_context=self.ssl_context, timeout=self.timeout
            )
        else:
            conn = imaplib.IMAP4(self.url.host, self.url.port, timeout=self.timeout)
            if "STARTTLS" in conn.capabilities:
                conn.starttls(self.ssl_context)
            elif not _loopback(self.url.host):
                conn.shutdown()
                raise ConfigurationError(
                    f"{self.url.host} offers no STARTTLS: refusing to send the password in the "
                    "clear (use imaps://)"
                )
        try:
            conn.login(self.url.user, self._password)
            typ, data = conn.select(_quote(self.url.mailbox))
            if typ != "OK":
                raise ConfigurationError(f"cannot select mailbox {self.url.mailbox!r}: {data!r}")
        except BaseException:
            conn.shutdown()
            raise
        return conn

    def poll_once(self) -> int:
        """One round: enqueue every unseen message, then delete or mark it. Returns how many.

        Raises :class:`BounceNotQueued` (after handling what came before) when the broker failed,
        ``redis.RedisError`` when a skipped message could not be noted (it is left untouched).
        """
        conn = self.connect()
        done = 0
        try:
            typ, data = conn.uid("SEARCH", "UNSEEN", "UNDELETED")
            if typ != "OK":
                raise imaplib.IMAP4.error(f"SEARCH failed: {data!r}")
            uids = data[0].split() if data and data[0] else []
            uidplus = b"UIDPLUS" in _capabilities(conn)
            self.skips.validity = _uidvalidity(conn)
            failures = self.skips.failures(uids)
            # messages whose fetch broke the connection go last: never ahead of the others
            for uid in sorted(uids, key=lambda u: failures.get(u, 0) > 0):
                if self._take(conn, uid, failures.get(uid, 0)):
                    self._done(conn, uid, uidplus)
                    done += 1
            if not self.mark_seen and done and not uidplus:
                conn.expunge()
        finally:
            if done:
                log.info("bounce_poll_enqueued", count=done, mailbox=self.url.mailbox)
            try:
                conn.close()
                conn.logout()
            except (imaplib.IMAP4.error, OSError):
                conn.shutdown()
        return done

    def _take(self, conn: imaplib.IMAP4, uid: bytes, failures: int) -> bool:
        """Enqueue one message (True), or skip it (noted, flagged) or find it gone (False)."""
        if failures >= MAX_FETCH_FAILURES:  # not even its size: asking may break it again
            error = f"its fetch broke the connection {failures} times"
            self._skip(conn, uid, self.skips.size(uid), "poll_fetch_failed", error=error)
            return False
        self._size_seen = None
        try:
            return self._fetch_and_publish(conn, uid)
        except (imaplib.IMAP4.abort, OSError):
            self.skips.failed(uid, self._size_seen)  # the connection is gone: the round ends
            raise

    def _fetch_and_publish(self, conn: imaplib.IMAP4, uid: bytes) -> bool:
        try:
            size = self._size(conn, uid)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:  # the server answered NO/BAD
            self._skip(conn, uid, None, "poll_fetch_failed", error=str(exc))
            return False
        if size is None:
            log.warning("bounce_poll_vanished", uid=uid.decode())  # expunged by someone else
            return False
        self._size_seen = size
        if size > self.max_bytes:
            head = self._head(conn, uid)
            error = f"{size} bytes, over MAILDISPATCH_BOUNCE_POLL_MAX_BYTES={self.max_bytes}"
            self._skip(conn, uid, size, "poll_too_large", head=head, error=error)
            return False
        try:
            raw = self._fetch(conn, uid)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:  # the server answered NO/BAD: it will not hand it out
            self._skip(conn, uid, size, "poll_fetch_failed", error=str(exc))
            return False
        if raw is None:
            log.warning("bounce_poll_vanished", uid=uid.decode())
            return False
        queued = truncate(raw, self.queue_max_bytes)
        if queued is None:  # the report itself is over MAILDISPATCH_BOUNCE_MAX_BYTES
            error = (
                f"the report itself is over MAILDISPATCH_BOUNCE_MAX_BYTES={self.queue_max_bytes}"
            )
            self._skip(conn, uid, size, "poll_too_large", raw=raw, error=error)
            return False
        if len(queued) < len(raw):
            log.info("bounce_truncated", size=len(raw), kept=len(queued), uid=uid.decode())
        self.publisher.publish(InboundMessage(raw=queued, source="imap"))
        with contextlib.suppress(redis.RedisError):
            self.skips.forget(uid)
        return True

    def _size(self, conn: imaplib.IMAP4, uid: bytes) -> int | None:
        typ, data = conn.uid("FETCH", uid.decode(), "(UID RFC822.SIZE)")
        if typ != "OK":
            raise imaplib.IMAP4.error(f"FETCH RFC822.SIZE failed: {data!r}")
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if isinstance(line, bytes) and (found := _FETCH_SIZE.search(line)):
                return int(found.group(1))
        return None

    def _head(self, conn: imaplib.IMAP4, uid: bytes) -> bytes | None:
        """The start of a message's header (what an oversized message's note keeps)."""
        try:
            typ, data = conn.uid("FETCH", uid.decode(), f"(BODY.PEEK[HEADER]<0.{HEAD_BYTES}>)")
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            return None
        if typ != "OK":
            return None
        return _literal(data)

    def _fetch(self, conn: imaplib.IMAP4, uid: bytes) -> bytes | None:
        typ, data = conn.uid("FETCH", uid.decode(), "(UID BODY.PEEK[])")
        if typ != "OK":
            raise imaplib.IMAP4.error(f"FETCH failed: {data!r}")
        return _literal(data)

    def _skip(
        self, conn: imaplib.IMAP4, uid: bytes, size: int | None, why: str, **kept: Any
    ) -> None:
        """Note the message in the dead letters, then flag it so that no round takes it again.

        Never deleted, whatever ``--mark-seen`` says: the note may hold only part of it.
        """
        self.skips.note(uid, size, why, **kept)  # raises when it cannot: message left untouched
        conn.uid("STORE", uid.decode(), "+FLAGS.SILENT", "(\\Seen \\Flagged)")

    def _done(self, conn: imaplib.IMAP4, uid: bytes, uidplus: bool) -> None:
        """Only called once the message is on the queue."""
        if self.mark_seen:
            conn.uid("STORE", uid.decode(), "+FLAGS.SILENT", "(\\Seen)")
            return
        conn.uid("STORE", uid.decode(), "+FLAGS.SILENT", "(\\Deleted)")
        if uidplus:  # RFC 4315: expunge this message only, not others flagged by someone else
            conn.uid("EXPUNGE", uid.decode())


def _literal(data: list[Any]) -> bytes | None:
    """The message bytes of a FETCH answer (None when the message was not in it)."""
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    return None


def _uidvalidity(conn: imaplib.IMAP4) -> str:
    """The mailbox's UIDVALIDITY (UIDs are only unique with it)."""
    _, data = conn.response("UIDVALIDITY")
    value = data[0] if data else None
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _capabilities(conn: imaplib.IMAP4) -> set[bytes]:
    """The capabilities after login (imaplib keeps only the greeting's, which lack UIDPLUS)."""
    typ, data = conn.capability()
    if typ != "OK" or not data or not isinstance(data[0], bytes):
        return set()
    return set(data[0].upper().split())


def run(poller: Poller, *, once: bool, interval: float) -> int:
    """Poll until stopped (or one round with ``once``); exit status 75 when a round failed."""
    while True:
        status = 0
        try:
            poller.poll_once()
        except BounceNotQueued as exc:
            log.warning("bounce_poll_enqueue_failed", error=str(exc))
            status = 75  # EX_TEMPFAIL: the messages stay in the mailbox
        except redis.RedisError as exc:  # a skipped message could not be noted: left as it was
            log.warning("bounce_poll_note_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            status = 75
        except (imaplib.IMAP4.error, OSError, ssl.SSLError) as exc:
            log.warning("bounce_poll_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            status = 75
        if once:
            return status
        time.sleep(interval)
