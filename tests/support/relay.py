"""A real SMTP server (aiosmtpd) for tests, scripted by recipient local part.

``reject-...@`` -> 550 5.1.1 at RCPT; ``defer<N>-...@`` -> 451 4.3.0 for the first N attempts,
then accepted; ``full-...@`` -> 552 5.2.2. Everything else is accepted. The server keeps every
accepted message with its envelope, and counts messages per Message-ID.
"""

from __future__ import annotations

import asyncio
import collections
import email
import email.policy
import re
import threading
from dataclasses import dataclass
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

_DEFER = re.compile(r"^defer(\d+)-")


@dataclass
class Received:
    """One accepted message."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        """The parsed message."""
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


class RecordingHandler:
    """Keeps envelopes; answers as the recipient's local part scripts."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.attempts: collections.Counter[str] = collections.Counter()
        self.delay = 0.0  # seconds to wait before every reply to DATA
        self.lock = threading.Lock()

    def reset(self) -> None:
        """Forget what was received."""
        with self.lock:
            self.messages.clear()
            self.attempts.clear()
            self.delay = 0.0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Script the answer by local part."""
        local = address.split("@")[0].lower()
        with self.lock:
            self.attempts[address] += 1
            seen = self.attempts[address]
        if local.startswith("reject-"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"
        if local.startswith("full-"):
            return f"552 5.2.2 <{address}>: Mailbox full"
        match = _DEFER.match(local)
        if match and seen <= int(match.group(1)):
            return f"451 4.3.0 <{address}>: Temporary lookup failure, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message."""
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.messages.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    bytes(envelope.original_content or envelope.content),
                )  # type: ignore[arg-type]
            )
        return "250 2.0.0 Ok: queued"

    def by_message_id(self) -> collections.Counter[str]:
        """How many times each Message-ID arrived."""
        with self.lock:
            return collections.Counter(str(m.message["Message-ID"]) for m in self.messages)


class Relay:
    """A started aiosmtpd server on a loopback port."""

    def __init__(
        self, port: int, handler: RecordingHandler | None = None, **kwargs: object
    ) -> None:
        self.handler = handler or RecordingHandler()
        self.port = port
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=port, **kwargs)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        """``smtp://127.0.0.1:port``."""
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> Relay:
        """Start listening."""
        self.controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        self.controller.stop()
