"""``maildispatch bounce-server``: inbound SMTP for the bounce domain, feeding ``mail.bounces``.

It faces the Internet, so it takes as little as it can:

- RCPT: only a return path whose token verifies (``b+<token>@MAILDISPATCH_BOUNCE_DOMAIN``,
  signed with the current or a previous secret key) and the feedback-loop address
  (``MAILDISPATCH_BOUNCE_FBL_ADDRESS``) are accepted; anything else, at the bounce domain or
  not, is refused with 550 before any data is read. A feedback report counts only when the
  original it quotes carries a valid token (checked by the ingest task).
- At most ``MAILDISPATCH_BOUNCE_MAX_RECIPIENTS`` per transaction, ``..._MAX_CONNECTIONS`` open
  connections and ``..._MAX_CONNECTIONS_PER_PEER`` from one address (421 beyond).
- It reads at most ``MAILDISPATCH_BOUNCE_READ_MAX_BYTES`` (announced in the EHLO ``SIZE``
  keyword, 552 beyond) and queues at most ``MAILDISPATCH_BOUNCE_MAX_BYTES``: a bigger report has
  its quoted original cut (worker/bounces/classify/truncate.py), or is refused (552) when the report
  itself does not fit.

The server answers 250 to DATA only once the broker has taken the raw message; if the broker is
unreachable or slow it answers 451, and the sending MTA keeps the bounce and tries again later.

With ``MAILDISPATCH_BOUNCE_TLS_CERT`` and ``MAILDISPATCH_BOUNCE_TLS_KEY`` set it offers STARTTLS
(RFC 3207): MTAs that support it send bounces, and the addresses and text they carry, encrypted.
TLS is offered, never required: a publicly referenced MX must accept mail in the clear too
(RFC 3207 §4), or bounces from MTAs without TLS would be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import time
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from config.settings import ConfigurationError, Settings
from worker.bounces.classify.truncate import truncate
from worker.bounces.intake.enqueue import BounceNotQueued, BouncePublisher, InboundMessage
from worker.message.returnpath import PREFIX, is_return_domain, token_from_address
from worker.message.unsubscribe import mailto_address

log = structlog.get_logger("maildispatch.bounces.server")


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"MAILDISPATCH_BOUNCE_LISTEN must be host:port, not {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class BounceHandler:
    """aiosmtpd handler: genuine return paths, the FBL and unsubscribe addresses only, 250 once
    queued."""

    def __init__(self, settings: Settings, publisher: BouncePublisher) -> None:
        self.domain = settings.bounce_domain.lower()
        self.label = settings.return_path_label  # verified domains' bounces.<domain>
        self.fbl = settings.fbl_address
        self.unsubscribe = mailto_address(settings.bounce_domain)  # List-Unsubscribe's mailto
        self.keys = settings.verifying_keys()
        self.max_recipients = settings.bounce_max_recipients
        self.max_bytes = settings.bounce_max_bytes
        self.publisher = publisher

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Refuse every address but a verified return path, the FBL and unsubscribe addresses."""
        domain = address.rpartition("@")[2].lower()
        listed = address.strip().lower() in (self.fbl, self.unsubscribe)  # wherever they are
        if not listed and not is_return_domain(domain, self.domain, self.label):
            log.info("bounce_rcpt_refused", why="domain", domain=domain[:100], peer=_peer(session))
            return (
                "550 5.7.1 Relay access denied: this server only accepts mail for its bounce domain"
            )
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        if not listed:
            local = address.rpartition("@")[0]
            if token_from_address(address, self.keys, self.domain, self.label) is None:
                why = "forged_token" if local.lower().startswith(PREFIX) else "no_token"
                log.info("bounce_rcpt_refused", why=why, peer=_peer(session))
                return "550 5.1.1 No such return path here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Enqueue the raw message; 451 (the sender retries) when the broker did not take it."""
        content = envelope.original_content or envelope.content or b""
        received = (
            content if isinstance(content, bytes) else content.encode("utf-8", "surrogateescape")
        )
        raw = truncate(received, self.max_bytes)
        if raw is None:
            log.info("bounce_too_big", size=len(received), peer=_peer(session))
            return "552 5.3.4 Message too big: the report itself exceeds the size limit"
        if len(raw) < len(received):
            log.info("bounce_truncated", size=len(received), kept=len(raw), peer=_peer(session))
        message = InboundMessage(
            raw=raw,
            source="smtp",
            rcpt_tos=tuple(envelope.rcpt_tos),
            mail_from=str(envelope.mail_from or ""),
            received_at=time.time(),
        )
        loop = asyncio.get_running_loop()
        try:
            task_id = await loop.run_in_executor(None, self.publisher.publish, message)
        except BounceNotQueued as exc:
            log.warning("bounce_enqueue_failed", error=str(exc), size=len(raw), peer=_peer(session))
            return "451 4.3.0 Temporary failure queueing the message, please try again later"
        log.info(
            "bounce_received",
            size=len(raw),
            task_id=task_id,
            peer=_peer(session),
            tls=session.ssl is not None,
        )
        return f"250 2.0.0 OK queued as {task_id}"


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context from the configured certificate and key (None: no STARTTLS)."""
    cert, key = settings.bounce_tls_cert, settings.bounce_tls_key
    if not cert and not key:
        return None
    if not cert or not key:
        raise ConfigurationError(
            "MAILDISPATCH_BOUNCE_TLS_CERT and MAILDISPATCH_BOUNCE_TLS_KEY go together: set both "
            "to offer STARTTLS, or neither"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"bounce-server cannot load its TLS certificate {cert!r} and key {key!r}: {exc}"
        ) from None
    return context


def _peer(session: Session) -> str:
    peer: Any = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")


class ConnectionLimits:
    """Open connections, in total and per peer address (one event loop: no lock needed)."""

    def __init__(self, total: int, per_peer: int) -> None:
        self.total = total
        self.per_peer = per_peer
        self.open: dict[str, int] = {}
        self.count = 0

    def take(self, peer: str) -> bool:
        """Count a new connection from ``peer``; False when it is one too many."""
        if self.count >= self.total or self.open.get(peer, 0) >= self.per_peer:
            return False
        self.count += 1
        self.open[peer] = self.open.get(peer, 0) + 1
        return True

    def give_back(self, peer: str) -> None:
        """A connection counted by ``take`` has closed."""
        self.count -= 1
        left = self.open.get(peer, 1) - 1
        if left > 0:
            self.open[peer] = left
        else:
            self.open.pop(peer, None)


class LimitedSMTP(SMTP):
    """aiosmtpd's SMTP protocol that answers 421 and hangs up beyond the connection limits."""

    def __init__(self, limits: ConnectionLimits, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._counted_peer: str | None = None
        #: bytes received since the last line feed: aiosmtpd keeps a line's pieces until its
        #: end, past the message size limit too, so a line without one would grow without bound
        self._unbroken = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Take a connection slot, or refuse the connection before any SMTP exchange."""
        peername = transport.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else str(peername)
        if not self._limits.take(peer):
            log.warning("bounce_connection_refused", peer=peer, open=self._limits.count)
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
            transport.close()
            return
        self._counted_peer = peer
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """Hang up on a line longer than a whole message may be (552), before it is kept."""
        end = data.rfind(b"\n")
        self._unbroken = self._unbroken + len(data) if end < 0 else len(data) - end - 1
        limit = self.data_size_limit
        if limit is not None and self._unbroken > limit + self.line_length_limit:
            log.warning("bounce_line_too_long", peer=self._counted_peer)
            transport = self.transport
            if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
                transport.write(b"552 5.3.4 Line too long; closing the connection\r\n")
                transport.close()
            return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """Give the slot back."""
        if self._counted_peer is None:
            return  # refused in connection_made: aiosmtpd never saw this connection
        self._limits.give_back(self._counted_peer)
        self._counted_peer = None
        super().connection_lost(exc)


class BounceServer:
    """The listening server; ``start`` and ``stop`` on a running event loop."""

    def __init__(self, settings: Settings, listen: str | None = None) -> None:
        self.settings = settings
        self.host, self.port = parse_listen(listen or settings.bounce_listen)
        self.tls = tls_context(settings)  # a bad certificate stops it before it connects
        self.publisher = BouncePublisher(settings)
        self.handler = BounceHandler(settings, self.publisher)
        self.limits = ConnectionLimits(
            settings.bounce_max_connections, settings.bounce_max_connections_per_peer
        )
        self._server: asyncio.Server | None = None

    def _protocol(self) -> SMTP:
        return LimitedSMTP(
            self.limits,
            self.handler,
            tls_context=self.tls,  # None: no STARTTLS in EHLO
            require_starttls=False,
            data_size_limit=self.settings.bounce_read_max_bytes,
            enable_SMTPUTF8=True,
            hostname=self.settings.bounce_domain,
            ident="maildispatch bounce server",
            timeout=300,  # RFC 5321 4.5.3.2: servers wait at least 5 minutes between commands
        )

    async def start(self) -> None:
        """Listen on the configured address."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        log.info(
            "bounce_server_listening",
            host=self.host,
            port=self.port,
            domain=self.settings.bounce_domain,
            max_bytes=self.settings.bounce_max_bytes,
            read_max_bytes=self.settings.bounce_read_max_bytes,
            max_connections=self.limits.total,
            max_connections_per_peer=self.limits.per_peer,
            starttls=self.tls is not None,
        )

    async def stop(self) -> None:
        """Stop accepting connections and release the broker connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        self.publisher.close()
        log.info("bounce_server_stopped")


async def serve(settings: Settings, listen: str | None = None) -> None:
    """Run the bounce server until SIGTERM or SIGINT."""
    server = BounceServer(settings, listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
