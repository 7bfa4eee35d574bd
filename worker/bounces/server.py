"""``maildispatch bounce-server``: inbound SMTP for the bounce domain, feeding ``mail.bounces``.

It is never an open relay: a recipient outside ``MAILDISPATCH_BOUNCE_DOMAIN`` is refused at
RCPT (550). A message over ``MAILDISPATCH_BOUNCE_MAX_BYTES`` is refused (552, announced in the
EHLO ``SIZE`` keyword so well-behaved MTAs do not even try). The server answers 250 to DATA only
once the broker has taken the raw message; if the broker is unreachable or slow it answers 451,
and the sending MTA keeps the bounce and tries again later. Tokens are not checked here but by
the ingest task, which drops forged ones.

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
from worker.bounces.enqueue import BouncePublisher, EnqueueFailed, InboundMessage

log = structlog.get_logger("maildispatch.bounces.server")

MAX_RECIPIENTS = 50  # a report goes to one return path; a long list is not a bounce


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"MAILDISPATCH_BOUNCE_LISTEN must be host:port, not {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class BounceHandler:
    """aiosmtpd handler: accept the bounce domain only, 250 only after the broker took it."""

    def __init__(self, domain: str, publisher: BouncePublisher) -> None:
        self.domain = domain.lower()
        self.publisher = publisher

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Refuse every domain but ours: this server relays nothing."""
        domain = address.rpartition("@")[2].lower()
        if domain != self.domain:
            log.info("bounce_rcpt_refused", domain=domain[:100], peer=_peer(session))
            return (
                "550 5.7.1 Relay access denied: this server only accepts mail for its bounce domain"
            )
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Enqueue the raw message; 451 (the sender retries) when the broker did not take it."""
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode("utf-8", "surrogateescape")
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
        except EnqueueFailed as exc:
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


class BounceServer:
    """The listening server; ``start`` and ``stop`` on a running event loop."""

    def __init__(self, settings: Settings, listen: str | None = None) -> None:
        self.settings = settings
        self.host, self.port = parse_listen(listen or settings.bounce_listen)
        self.tls = tls_context(settings)  # a bad certificate stops it before it connects
        self.publisher = BouncePublisher(settings)
        self.handler = BounceHandler(settings.bounce_domain, self.publisher)
        self._server: asyncio.Server | None = None

    def _protocol(self) -> SMTP:
        return SMTP(
            self.handler,
            tls_context=self.tls,  # None: no STARTTLS in EHLO
            require_starttls=False,
            data_size_limit=self.settings.bounce_max_bytes,
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
