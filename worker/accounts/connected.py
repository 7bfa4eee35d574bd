"""Connected accounts: per owner at most one Gmail account, one custom SMTP server, and the
owner's preferred channel (``msc`` when unset).

This module reads them for sending; :mod:`worker.accounts.manage` writes and lists them.

Secrets (refresh tokens, OAuth client secrets, SMTP passwords) are stored only as Fernet tokens
(:mod:`worker.accounts.vault`) and decrypted in the worker that sends, in memory. A custom SMTP
server logs in with a password or, for Microsoft 365 and Google, with an OAuth grant (``AUTH
XOAUTH2``, worker/accounts/oauth.py). An account is ``connected``, ``needs_reconnect`` (the
provider refused its OAuth grant: the user must connect again) or ``auth_failed`` (the SMTP
server refused the password: the user must set it again); a send through an account that is not
``connected`` fails at once, without another login attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config.channels import CHANNELS, OWNER_ACCOUNT
from config.settings import Settings
from worker.accounts.oauth import PROVIDERS, Grant, Rotated
from worker.accounts.vault import Vault, VaultError
from worker.channels.smtppool import Security, SmtpServer
from worker.errors import DeliveryError, PermanentError
from worker.failures.kinds import FailedKind
from worker.store import Store, open_store
from worker.store.models import Account, utcnow

log = structlog.get_logger("maildispatch.accounts")

GMAIL, SMTP = "gmail", "smtp"
#: channels that send as the user, through an account of theirs
USER_CHANNELS = OWNER_ACCOUNT
PREFERABLE = CHANNELS
SECURITIES: tuple[Security, ...] = ("starttls", "tls", "none")
#: the state an account takes when its credentials are refused: a password, or an OAuth grant
AUTH_FAILED, NEEDS_RECONNECT = "auth_failed", "needs_reconnect"
LABEL = {GMAIL: "Gmail account", SMTP: "custom SMTP server"}
CONNECT_HINT = {
    GMAIL: "maildispatch accounts gmail connect",
    SMTP: "maildispatch accounts smtp set",
}
#: how a custom SMTP server logs in
PASSWORD, XOAUTH2 = "password", "xoauth2"


@dataclass(frozen=True)
class GmailAccount:
    """A connected Gmail account, decrypted for sending (secrets never in its repr)."""

    owner: str
    email: str
    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)
    revision: int = 1


@dataclass(frozen=True)
class SmtpAccount:
    """A custom SMTP server, decrypted for sending (secrets never in its repr).

    It logs in with ``password``, or with an access token of the ``oauth`` grant (XOAUTH2).
    """

    owner: str
    host: str
    port: int
    security: Security
    username: str
    password: str | None = field(default=None, repr=False)
    ca_pem: str | None = None
    revision: int = 1
    oauth: Grant | None = None

    def server(
        self, timeout: float, token: Callable[[], Awaitable[str]] | None = None
    ) -> SmtpServer:
        """Where and how to connect (the pool key: server and credentials).

        With an OAuth grant, ``token`` gives each new connection a current access token.
        """
        return SmtpServer(
            host=self.host,
            port=self.port,
            security=self.security,
            username=self.username,
            password=self.password,
            ca_data=self.ca_pem,
            timeout=timeout,
            # the account, not its current refresh token: one that the provider replaced
            # (worker/accounts/oauth.py) keeps the same pool and its connections
            grant=(
                f"{self.owner}\0{self.revision}\0{self.oauth.provider}\0{self.oauth.client_id}"
                if self.oauth
                else None
            ),
            token=token,
        )


def account_row(session: Session, owner: str, channel: str) -> Account | None:
    """The owner's stored account of a channel, if any."""
    return session.scalar(select(Account).where(Account.owner == owner, Account.channel == channel))


def oauth_client(
    settings: Settings, provider: str, client_id: str | None, client_secret: str | None
) -> tuple[str, str]:
    """The account's own OAuth client, else the deployment's (``MAILDISPATCH_<P>_CLIENT_ID``)."""
    known = PROVIDERS[provider]
    if client_id is None:
        client_id, client_secret = known.deployment_client(settings) or (None, None)
    if not client_id or not client_secret:
        raise PermanentError(
            f"no {known.label} OAuth client is configured: set {known.client_settings()}, or "
            "connect with --client-id",
            kind=FailedKind.CONFIG,
        )
    return client_id, client_secret


# -- reading accounts for a send --------------------------------------------------------------------
def load(
    session: Session, vault: Vault, settings: Settings, channel: str, owner: str
) -> GmailAccount | SmtpAccount:
    """The owner's account of a channel, decrypted; PermanentError when it cannot send."""
    row = account_row(session, owner, channel)
    if row is None:
        raise PermanentError(
            f"no {LABEL[channel]} is connected for this owner; connect one with "
            f"`{CONNECT_HINT[channel]}`",
            kind=FailedKind.CONFIG,
        )
    if row.state != "connected":
        what = row.address if channel == GMAIL else f"{row.username} at {row.host}"
        action = "reconnect" if row.state == NEEDS_RECONNECT else "set new credentials for"
        raise PermanentError(
            f"{action} the {LABEL[channel]} ({what}) with `{CONNECT_HINT[channel]}`: "
            f"it is {row.state} ({row.last_error or 'credentials refused'})",
            kind=FailedKind.AUTH,
        )
    try:
        secrets = vault.open(owner, channel, row.secret)
    except VaultError as exc:
        raise PermanentError(
            f"{exc}; the account must be connected again", kind=FailedKind.CONFIG
        ) from None
    if channel == GMAIL:
        client_id, client_secret = oauth_client(
            settings, "google", row.client_id, secrets.get("client_secret")
        )
        return GmailAccount(
            owner=owner,
            email=row.address or "",
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=secrets["refresh_token"],
            revision=row.revision,
        )
    grant = None
    if row.auth == XOAUTH2:
        provider = PROVIDERS[row.provider or ""]
        client_id, client_secret = oauth_client(
            settings, provider.name, row.client_id, secrets.get("client_secret")
        )
        grant = Grant(
            provider.name,
            provider.token_uri(settings),
            client_id,
            client_secret,
            secrets["refresh_token"],
            provider.smtp_scopes,
        )
    return SmtpAccount(
        owner=owner,
        host=row.host or "",
        port=row.port or 0,
        security=row.security if row.security in SECURITIES else "starttls",
        username=row.username or "",
        password=secrets.get("password"),
        ca_pem=row.ca_pem,
        revision=row.revision,
        oauth=grant,
    )


def mark_failed(
    session: Session, channel: str, owner: str, revision: int | None, reason: str
) -> str | None:
    """Flag a connected account whose credentials were refused; returns the new state.

    A refused OAuth grant (Gmail, XOAUTH2) makes it ``needs_reconnect``, a refused password
    ``auth_failed``. With ``revision`` only those credentials are flagged: a user who
    reconnected meanwhile keeps the new ones ``connected``.
    """
    row = account_row(session, owner, channel)
    if row is None:
        return None
    state = NEEDS_RECONNECT if channel == GMAIL or row.auth == XOAUTH2 else AUTH_FAILED
    query = (
        update(Account)
        .where(Account.owner == owner, Account.channel == channel, Account.state == "connected")
        .values(state=state, last_error=reason[:500], updated_at=utcnow())
    )
    if revision is not None:
        query = query.where(Account.revision == revision)
    done = session.execute(query)
    return state if getattr(done, "rowcount", 0) else None


def keep_refresh_token(
    session: Session, vault: Vault, channel: str, owner: str, revision: int, refresh_token: str
) -> bool:
    """Store the refresh token that replaced the account's own (only over the same revision)."""
    row = account_row(session, owner, channel)
    if row is None or row.revision != revision:
        return False
    secrets = vault.open(owner, channel, row.secret)
    secrets["refresh_token"] = refresh_token
    row.secret = vault.seal(owner, channel, secrets)
    session.flush()
    return True


def refresh_token_keeper(settings: Settings, channel: str) -> Rotated:
    """What a channel's access tokens call when the provider hands out a new refresh token."""

    async def keep(owner: str, revision: int, refresh_token: str) -> None:
        def write() -> bool:
            vault = Vault.from_settings(settings)
            with open_store(settings.database_url).session() as session:
                return keep_refresh_token(session, vault, channel, owner, revision, refresh_token)

        if await asyncio.to_thread(write):
            log.info("oauth_refresh_token_rotated", owner=owner, channel=channel)

    return keep


class AsyncAccounts:
    """The ``Accounts`` of worker/delivery.py for gmail and smtp, on the worker's event loop.

    An account is read once for the concurrent jobs of a batch (one owner per batch) and kept
    for a few seconds; a refused credential drops it at once.
    """

    CACHE_SECONDS = 2.0

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.vault = Vault.from_settings(settings)
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._revision: dict[tuple[str, str], int] = {}

    async def load(self, channel: str, owner: str) -> GmailAccount | SmtpAccount:
        """The owner's account, or PermanentError (kind ``config`` or ``auth``)."""
        key = (channel, owner)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._cache.get(key)
            if hit is None or hit[0] < time.monotonic():
                hit = (time.monotonic() + self.CACHE_SECONDS, await self._read(channel, owner))
                self._cache[key] = hit
                if len(self._cache) > 10_000:
                    self._cache.clear()
        found = hit[1]
        if isinstance(found, tuple):  # a refusal, raised afresh for every job
            text, kind = found
            raise PermanentError(text, kind=kind)
        return found  # type: ignore[no-any-return]

    async def _read(self, channel: str, owner: str) -> Any:
        def read() -> Any:
            with self.store.session() as session:
                try:
                    return load(session, self.vault, self.settings, channel, owner)
                except PermanentError as exc:
                    return (exc.text, exc.kind)

        found = await asyncio.to_thread(read)
        if not isinstance(found, tuple):
            self._revision[(channel, owner)] = found.revision
        return found

    async def auth_failed(self, channel: str, owner: str, error: DeliveryError) -> None:
        """Flag the account (``needs_reconnect`` / ``auth_failed``) with the server's words."""
        key = (channel, owner)
        self._cache.pop(key, None)
        revision = self._revision.get(key)

        def mark() -> str | None:
            with self.store.session() as session:
                return mark_failed(session, channel, owner, revision, error.describe())

        state = await asyncio.to_thread(mark)
        if state:
            log.warning("account_flagged", state=state, reply_code=error.reply_code)
