"""MSC: the operator's own relay servers. We own the return path, so every bounce comes back.

``From`` is the sender's identity; ``Sender`` is at the operator's domain, whose key signs the
message (DKIM); the envelope sender is a signed return-path token at the bounce domain.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

from config.settings import Settings
from producers.job import SendJob
from worker.channels.base import Envelope, MessageOptions, OutgoingMessage, Receipt
from worker.channels.smtppool import SmtpPool, SmtpServer
from worker.errors import TransientError
from worker.message import DkimKey
from worker.returnpath import return_path


class MscChannel:
    """Delivers through a pool of connections to each of the operator's relays, with failover."""

    name: ClassVar[str] = "msc"
    owns_return_path: ClassVar[bool] = True

    def __init__(self, settings: Settings) -> None:
        self.secret_key = settings.require_secret_key()
        self.bounce_domain = settings.bounce_domain
        self.domain = settings.msc_domain
        self.sender = f"{settings.msc_sender_local}@{settings.msc_domain}"
        self.dkim_key = (
            DkimKey.from_file(
                settings.dkim_private_key_file, settings.msc_domain, settings.dkim_selector
            )
            if settings.dkim_private_key_file and settings.dkim_selector
            else None
        )
        servers = [SmtpServer.from_url(u, settings.smtp_timeout) for u in settings.msc_relays]
        if not servers:
            raise ValueError("MAILDISPATCH_MSC_RELAYS names no relay")
        self.pools = [
            SmtpPool(s, settings.msc_connections_per_relay, local_hostname=settings.msc_domain)
            for s in servers
        ]
        self._next = itertools.cycle(range(len(self.pools)))

    def message_options(self, job: SendJob, account: Any) -> MessageOptions:
        """Identity in From, operator in Sender, return-path token as envelope sender."""
        return MessageOptions(
            mail_from=return_path(job.id, self.secret_key, self.bounce_domain),
            domain=self.domain,
            sender=self.sender,
            dkim_key=self.dkim_key,
        )

    async def deliver(self, message: OutgoingMessage, envelope: Envelope, account: Any) -> Receipt:
        """Send through the next relay; a relay that cannot be reached fails over to the next."""
        start = next(self._next)
        last: TransientError | None = None
        for i in range(len(self.pools)):
            pool = self.pools[(start + i) % len(self.pools)]
            try:
                return await pool.send(envelope, message.data)
            except TransientError as exc:
                if exc.reply_code is not None:  # the relay answered: do not try it elsewhere
                    raise
                last = exc
        assert last is not None
        raise last

    async def close(self) -> None:
        """Close every relay's connections."""
        for pool in self.pools:
            await pool.close()
