"""An aiosmtpd relay that offers PIPELINING (RFC 2920) and logs how the commands arrived.

aiosmtpd reads commands line by line, so it handles pipelined commands in order, but it does not
advertise PIPELINING: the handler's EHLO hook adds it (``pipelining=False`` leaves it out). Each
connection keeps a log of what the server read (one entry per read from the socket) and what it
wrote, in order. ``flights()`` groups the reads between two writes: what the client sent before
it could have seen the next reply. A client that pipelines sends MAIL, the RCPTs and DATA in
one flight; one that waits for each reply cannot, since each reply is logged before it is
written. Replies are held while more input waits and then written together, as Postfix does,
so pipelined replies reach the client in one read (``coalesce=False`` writes each at once).

Scripts, beside tests/support/relay.py's recipients (``reject-``, ``defer<N>-``, ``full-``):
a sender ``refuse-...@`` gets 550 at MAIL; a recipient ``bye-...@`` gets 421; ``data_anyway``
answers DATA with 354 even when no recipient was accepted (the broken server RFC 2920 section
3.1 warns about); ``reply_delay`` waits that long before every reply (a network round trip);
``hang_up_at_mail = N`` ends each connection at its N-th MAIL (0 the first), as a server that
timed the idle connection out just then: with 421 and a close (``hang_up_with``), or ``""``, a
close with no reply.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.relay import RecordingHandler, Relay


class WireHandler(RecordingHandler):
    """The scripted recording handler, plus PIPELINING in EHLO and a log per connection."""

    def __init__(self, pipelining: bool = True, coalesce: bool = True) -> None:
        super().__init__()
        self.pipelining = pipelining
        self.coalesce = coalesce
        self.data_anyway = False
        self.reply_delay = 0.0
        self.hang_up_at_mail: int | None = None
        self.hang_up_with = "421 4.4.2 Idle timeout, closing connection"
        self.wires: list[
            list[tuple[str, bytes]]
        ] = []  # per connection: ("in"|"out"|"closed", bytes)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """Add PIPELINING to aiosmtpd's EHLO lines."""
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """550 for a ``refuse-`` sender; the hang-up of ``hang_up_at_mail``."""
        assert isinstance(server, WireSmtp)
        server.mails += 1
        if server.mails - 1 == self.hang_up_at_mail:
            server.hanging_up = True
            if not self.hang_up_with and server.transport is not None:
                server.transport.close()  # the reply below is never written
            return self.hang_up_with or "421 unsent"
        if address.split("@")[0].lower().startswith("refuse-"):
            return f"550 5.7.1 <{address}>: Sender address rejected: Access denied"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """421 for a ``bye-`` recipient, else as relay.py scripts."""
        if address.split("@")[0].lower().startswith("bye-"):
            return "421 4.3.2 Service shutting down, closing transmission channel"
        return await super().handle_RCPT(server, session, envelope, address, options)

    def note(self, wire: list[tuple[str, bytes]], direction: str, data: bytes) -> None:
        """Append to a connection's log."""
        with self.lock:
            wire.append((direction, data))

    def connections(self) -> int:
        """Connections accepted so far."""
        with self.lock:
            return len(self.wires)

    def flights(self, connection: int = 0) -> list[bytes]:
        """What the client sent on a connection, one entry per turn: reads between two writes."""
        flights: list[bytes] = []
        turn = b""
        with self.lock:
            events = list(self.wires[connection])
        for direction, data in events:
            if direction == "in":
                turn += data
            elif turn:
                flights.append(turn)
                turn = b""
        if turn:
            flights.append(turn)
        return flights

    def written(self, connection: int = 0) -> list[bytes]:
        """What the server wrote on a connection, one entry per write."""
        with self.lock:
            return [data for direction, data in self.wires[connection] if direction == "out"]

    def wait_closed(self, connection: int = 0, timeout: float = 5.0) -> bool:
        """Whether the connection is (or within ``timeout`` gets) closed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.wires[connection] and self.wires[connection][-1][0] == "closed":
                    return True
            time.sleep(0.01)
        return False


class WireSmtp(SMTP):
    """aiosmtpd's server with the wire log, held replies and the broken DATA of WireHandler."""

    def __init__(self, handler: WireHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.wire_handler = handler
        self.wire: list[tuple[str, bytes]] = []
        self.held: list[bytes] = []
        self.mails = 0
        self.hanging_up = False
        with handler.lock:
            handler.wires.append(self.wire)

    def data_received(self, data: bytes) -> None:
        self.wire_handler.note(self.wire, "in", data)
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        self.wire_handler.note(self.wire, "closed", b"")
        super().connection_lost(error)

    async def push(self, status: str | bytes) -> None:
        handler = self.wire_handler
        if handler.reply_delay:
            await asyncio.sleep(handler.reply_delay)
        if isinstance(status, str):
            status = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        self.held.append(status + b"\r\n")
        if handler.coalesce and self._reader._buffer and not self.hanging_up:  # type: ignore[attr-defined]
            return  # more commands are waiting: answer them together
        out, self.held = b"".join(self.held), []
        handler.note(self.wire, "out", out)
        self._writer.write(out)
        await self._writer.drain()
        if self.hanging_up and self.transport is not None:
            self.transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.envelope
        if self.wire_handler.data_anyway and envelope is not None and not envelope.rcpt_tos:
            # a placeholder recipient makes aiosmtpd answer 354 and keep what follows
            envelope.rcpt_tos.append("nobody@data-anyway.invalid")
        await super().smtp_DATA(arg)


class _WireController(Controller):
    def factory(self) -> WireSmtp:
        return WireSmtp(self.handler, **self.SMTP_kwargs)


class WireRelay(Relay):
    """A started WireSmtp server on a loopback port (``start``/``stop``/``url`` as Relay)."""

    handler: WireHandler

    def __init__(
        self, port: int, pipelining: bool = True, coalesce: bool = True, **kwargs: object
    ) -> None:
        super().__init__(port, WireHandler(pipelining, coalesce), **kwargs)
        self.controller = _WireController(self.handler, hostname="127.0.0.1", port=port, **kwargs)  # type: ignore[arg-type]

    def start(self) -> WireRelay:
        """Start listening; forget the connection aiosmtpd's Controller opens to check that."""
        super().start()
        with self.handler.lock:
            self.handler.wires.clear()
        return self
