"""Custom SMTP: the owner's own mail server (their provider, their Exchange), with their login.

``From`` is the identity and so is the envelope sender: bounces go to the user's mailbox, not
to maildispatch (no return-path token, no suppression list, no bounce ingest). Certificates are
always verified, against the account's CA when it has one. A refused login (535) is a
PermanentError of kind ``auth``: the account is flagged ``auth_failed`` and nothing retries it
with the same password. Connections are pooled per server and credentials (``smtppool``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

from config.settings import Settings
from producers.job import SendJob
from worker.accounts import SmtpAccount
from worker.channels.base import Envelope, MessageOptions, OutgoingMessage, Receipt
from worker.channels.smtppool import SmtpPool, SmtpServer
from worker.errors import PermanentError

#: a user's server often caps concurrent connections per login (some at 3); stay below that
CONNECTIONS_PER_SERVER = 3
#: pools kept open at once; the least recently used one is closed beyond this
MAX_POOLS = 256


class SmtpChannel:
    """Delivers through the owner's server, one small pool per (server, credentials)."""

    name: ClassVar[str] = "smtp"
    owns_return_path: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.smtp_timeout
        self._pools: OrderedDict[SmtpServer, SmtpPool] = OrderedDict()

    def message_options(self, job: SendJob, account: Any) -> MessageOptions:
        """The identity in From and as the envelope sender; Message-ID at its domain."""
        address = job.identity.address
        return MessageOptions(mail_from=address, domain=address.rpartition("@")[2])

    async def deliver(self, message: OutgoingMessage, envelope: Envelope, account: Any) -> Receipt:
        """One SMTP transaction on the owner's server."""
        if not isinstance(account, SmtpAccount):
            raise PermanentError("no custom SMTP server for this owner", kind="config")
        pool = await self._pool(account.server(self.timeout))
        return await pool.send(envelope, message.data)

    async def _pool(self, server: SmtpServer) -> SmtpPool:
        pool = self._pools.get(server)
        if pool is not None:
            self._pools.move_to_end(server)
            return pool
        pool = self._pools[server] = SmtpPool(server, CONNECTIONS_PER_SERVER)
        while len(self._pools) > MAX_POOLS:
            _, oldest = self._pools.popitem(last=False)
            await oldest.close()
        return pool

    async def close(self) -> None:
        """Close every pool's idle connections."""
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.close()
