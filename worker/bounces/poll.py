"""``maildispatch bounce-poll``: feed ``mail.bounces`` from an IMAP mailbox.

For operators whose bounces land in a mailbox rather than at ``bounce-server``. Each round
logs in, takes every unseen, undeleted message (``BODY.PEEK[]`` so that reading does not mark
it), enqueues it, and only once the broker has taken it flags it ``\\Deleted`` and expunges it
by UID (or, with ``--mark-seen``, flags it ``\\Seen``). A publish that fails ends the round with
the message untouched: it is taken again on the next round.

URLs: ``imaps://user@host[:993]/MAILBOX`` (TLS), or ``imap://user@host[:143]/MAILBOX`` which
upgrades with STARTTLS; a server without STARTTLS is refused unless it is on loopback, so a
password never crosses a network in the clear. Certificates are verified (``--ca-file`` adds a
private CA).
"""

from __future__ import annotations

import imaplib
import ipaddress
import re
import ssl
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import structlog

from config.settings import ConfigurationError
from worker.bounces.enqueue import BouncePublisher, EnqueueFailed, InboundMessage

log = structlog.get_logger("maildispatch.bounces.poll")

_FETCH_UID = re.compile(rb"\bUID (\d+)")


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
    ) -> None:
        self.url = url
        self._password = password
        self.publisher = publisher
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

        Raises :class:`EnqueueFailed` (after handling what came before) when the broker failed.
        """
        conn = self.connect()
        done = 0
        try:
            typ, data = conn.uid("SEARCH", "UNSEEN", "UNDELETED")
            if typ != "OK":
                raise imaplib.IMAP4.error(f"SEARCH failed: {data!r}")
            uids = data[0].split() if data and data[0] else []
            uidplus = b"UIDPLUS" in _capabilities(conn)
            for uid in uids:
                raw = self._fetch(conn, uid)
                if raw is None:
                    continue
                self.publisher.publish(InboundMessage(raw=raw, source="imap"))
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

    def _fetch(self, conn: imaplib.IMAP4, uid: bytes) -> bytes | None:
        typ, data = conn.uid("FETCH", uid.decode(), "(UID BODY.PEEK[])")
        if typ != "OK":
            raise imaplib.IMAP4.error(f"FETCH failed: {data!r}")
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                return item[1]
        log.warning("bounce_poll_vanished", uid=uid.decode())  # expunged by someone else
        return None

    def _done(self, conn: imaplib.IMAP4, uid: bytes, uidplus: bool) -> None:
        """Only called once the message is on the queue."""
        if self.mark_seen:
            conn.uid("STORE", uid.decode(), "+FLAGS.SILENT", "(\\Seen)")
            return
        conn.uid("STORE", uid.decode(), "+FLAGS.SILENT", "(\\Deleted)")
        if uidplus:  # RFC 4315: expunge this message only, not others flagged by someone else
            conn.uid("EXPUNGE", uid.decode())


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
        except EnqueueFailed as exc:
            log.warning("bounce_poll_enqueue_failed", error=str(exc))
            status = 75  # EX_TEMPFAIL: the messages stay in the mailbox
        except (imaplib.IMAP4.error, OSError, ssl.SSLError) as exc:
            log.warning("bounce_poll_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            status = 75
        if once:
            return status
        time.sleep(interval)
