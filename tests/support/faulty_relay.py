"""A relay that misbehaves on request: goes down and comes back on the same port, answers 421 to
every other connection, and notes when each message arrived (for pacing checks).

Built on tests/support/relay.py's scripted handler, so recipients still script 550/451 answers;
``later<N>-...@`` adds a first answer of "451 ... try again in N seconds" (greylisting).
"""

from __future__ import annotations

import collections
import itertools
import re
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.relay import RecordingHandler

_LATER = re.compile(r"^later(\d+)-")


class FaultyHandler(RecordingHandler):
    """Records arrival times; ``flaky`` makes every other connection get 421 at MAIL FROM."""

    def __init__(self) -> None:
        super().__init__()
        self.flaky = False
        self.arrivals: list[tuple[float, str]] = []  # (wall-clock time, first recipient)
        self.refused_connections = 0
        self._sessions = itertools.count()
        self._verdict: dict[int, bool] = {}
        self.rcpt_times: collections.defaultdict[str, list[float]] = collections.defaultdict(list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Note when each recipient was tried; greylist ``later<N>-`` once for N seconds."""
        with self.lock:
            self.rcpt_times[address].append(time.time())
        match = _LATER.match(address.split("@")[0].lower())
        if not match:
            return await super().handle_RCPT(server, session, envelope, address, options)
        with self.lock:
            self.attempts[address] += 1
            seen = self.attempts[address]
        if seen == 1:
            return (
                f"451 4.7.1 <{address}>: Greylisted, please try again in {match.group(1)} seconds"
            )
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """421 on every other connection (decided once per connection), when flaky."""
        if self.flaky:
            key = id(session)
            if key not in self._verdict:
                self._verdict[key] = next(self._sessions) % 2 == 1
                if self._verdict[key]:
                    with self.lock:
                        self.refused_connections += 1
            if self._verdict[key]:
                return "421 4.7.0 Too many connections from your host, closing transmission channel"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message and when it came."""
        reply = await super().handle_DATA(server, session, envelope)
        with self.lock:
            self.arrivals.append((time.time(), envelope.rcpt_tos[0] if envelope.rcpt_tos else ""))
        return reply


class FaultyRelay:
    """An aiosmtpd relay on a fixed loopback port that can be taken down and brought back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.handler = FaultyHandler()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        """``smtp://127.0.0.1:port``."""
        return f"smtp://127.0.0.1:{self.port}"

    def up(self) -> FaultyRelay:
        """Listen (again) on the same port, with the same handler and its records."""
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def down(self) -> None:
        """Stop listening and drop every connection."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def received(self) -> int:
        """Messages accepted so far."""
        with self.handler.lock:
            return len(self.handler.messages)
