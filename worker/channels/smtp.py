"""Custom SMTP: the owner's own mail server (their provider, their Exchange), with their login.

``From`` is the identity and so is the envelope sender: bounces go to the user's mailbox, not
to maildispatch (no return-path token, no suppression list, no bounce ingest). Certificates are
always verified, against the account's CA when it has one. A refused login (535) is a
PermanentError of kind ``auth``: the account is flagged ``auth_failed`` and nothing retries it
with the same password. Connections are pooled per server and credentials (``smtppool``).

An account may log in with an OAuth grant instead (``AUTH XOAUTH2``: Microsoft 365, whose Basic
authentication for SMTP ends, and Google): every new connection gets a current access token
(worker/accounts/oauth.py, refreshed before it expires); a token the server refuses is replaced
once within the same attempt, and a grant the provider refuses (``invalid_grant``) makes the
account ``needs_reconnect`` and the job an ``auth`` Failed Send.

The server is the user's input, so every new connection goes to an address checked against the
operator's blocked networks (``netguard``), the login is never sent without TLS unless the
operator allows it (``MAILDISPATCH_SMTP_ALLOW_PLAINTEXT_AUTH``), and what the server says reaches
the owner only as printable text of SMTP replies (``smtptext``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

from config.limits import parse_keyed_rates, parse_rates
from config.retry import RetryPolicy, settings_policy
from config.settings import Settings
from producers.job import SendJob
from worker.accounts.connected import SmtpAccount, refresh_token_keeper
from worker.accounts.oauth import AccessToken, AccessTokens
from worker.channels.base import (
    Envelope,
    MessageOptions,
    OutgoingMessage,
    Receipt,
    Scope,
    ScopeRule,
)
from worker.channels.netguard import NetworkPolicy
from worker.channels.smtppool import SmtpPool, SmtpServer
from worker.errors import PermanentError
from worker.failures.kinds import FailedKind

#: a user's server often caps concurrent connections per login (some at 3); stay below that
CONNECTIONS_PER_SERVER = 3
#: pools kept open at once; the least recently used one is closed beyond this
MAX_POOLS = 256
PLAINTEXT_AUTH_REFUSED = (
    "cannot log in: this deployment never sends AUTH (the password) without TLS; set the "
    "server with --security starttls or tls"
)


class SmtpChannel:
    """Delivers through the owner's server, one small pool per (server, credentials)."""

    name: ClassVar[str] = "smtp"
    owns_return_path: ClassVar[bool] = False

    @classmethod
    def retry_policy(cls, settings: Settings) -> RetryPolicy:
        """``MAILDISPATCH_SMTP_RETRY_DELAYS`` / ``_GIVE_UP_AFTER``."""
        return settings_policy(settings, cls.name)

    @classmethod
    def pacing(cls, settings: Settings) -> ScopeRule | None:
        """Per server: ``MAILDISPATCH_SMTP_SERVER_LIMITS`` for a host, else ``_SMTP_LIMITS``."""
        every = parse_rates(settings.smtp_limits)
        servers = parse_keyed_rates(settings.smtp_server_limits)
        if not every and not servers:
            return None

        def scopes(job: SendJob, account: Any, recipients: Sequence[str]) -> list[Scope]:
            host = str(getattr(account, "host", "") or "").lower()
            rates = servers.get(host) or every
            if not rates:
                return []
            where = f"{host}:{getattr(account, 'port', '')}" if host else job.owner
            return [(f"smtp:{where}", rates)]

        return scopes

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.smtp_timeout
        self.policy = NetworkPolicy.from_settings(settings)
        self.allow_plaintext_auth = settings.smtp_allow_plaintext_auth
        self._pools: OrderedDict[SmtpServer, SmtpPool] = OrderedDict()
        self.tokens = AccessTokens(rotated=refresh_token_keeper(settings, self.name))

    def message_options(self, job: SendJob, account: Any) -> MessageOptions:
        """The identity in From and as the envelope sender; Message-ID at its domain."""
        address = job.identity.address
        return MessageOptions(mail_from=address, domain=address.rpartition("@")[2])

    async def deliver(self, message: OutgoingMessage, envelope: Envelope, account: Any) -> Receipt:
        """One SMTP transaction on the owner's server."""
        if not isinstance(account, SmtpAccount):
            raise PermanentError("no custom SMTP server for this owner", kind=FailedKind.CONFIG)
        if account.security == "none" and not self.allow_plaintext_auth:
            raise PermanentError(PLAINTEXT_AUTH_REFUSED, kind=FailedKind.AUTH)
        token: AccessToken | None = None
        if account.oauth is not None:
            token = self.tokens.get(account.owner, account.revision, account.oauth)
        pool = await self._pool(account.server(self.timeout, token.get if token else None))
        try:
            return await pool.send(envelope, message.data)
        except PermanentError as exc:
            if token is None or exc.kind != FailedKind.AUTH or exc.reply_code is None:
                raise
            # the server refused the access token (revoked or expired early): fetch another
            # and log in once more; a second refusal stands
            token.reject(token.last_given)
            return await pool.send(envelope, message.data)

    async def _pool(self, server: SmtpServer) -> SmtpPool:
        pool = self._pools.get(server)
        if pool is not None:
            self._pools.move_to_end(server)
            return pool
        pool = SmtpPool(server, CONNECTIONS_PER_SERVER, connector=self.policy.connect)
        self._pools[server] = pool
        while len(self._pools) > MAX_POOLS:
            _, oldest = self._pools.popitem(last=False)
            await oldest.close()
        return pool

    async def close(self) -> None:
        """Close every pool's idle connections."""
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.close()
        self.tokens.close()
