"""Connected accounts: per owner at most one Gmail account, one custom SMTP server, and the
owner's preferred channel (``msc`` when unset).

Secrets (refresh tokens, OAuth client secrets, SMTP passwords) are stored only as Fernet tokens
(:mod:`worker.accounts.vault`) and decrypted in the worker that sends, in memory. An account is
``connected``, ``needs_reconnect`` (Google refused its grant: the user must connect again) or
``auth_failed`` (the SMTP server refused the credentials: the user must set them again); a send
through an account that is not ``connected`` fails at once, without another login attempt.

The preferred channel is mirrored into the Redis hash ``config.keys.PREFERRED_CHANNEL``, where
producers resolve the channel of a job that names none (``producers.client``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from config import keys
from config.channels import CHANNELS, DEFAULT_CHANNEL, OWNER_ACCOUNT
from config.errors import MaildispatchError
from config.settings import Settings
from worker.accounts.vault import Vault, VaultError
from worker.channels.netguard import NetworkPolicy
from worker.channels.smtppool import Security, SmtpServer
from worker.errors import DeliveryError, PermanentError
from worker.failures.kinds import FailedKind
from worker.store import Store
from worker.store.models import Account, ChannelPreference, utcnow

log = structlog.get_logger("maildispatch.accounts")

GMAIL, SMTP = "gmail", "smtp"
#: channels that send as the user, through an account of theirs
USER_CHANNELS = OWNER_ACCOUNT
PREFERABLE = CHANNELS
SECURITIES: tuple[Security, ...] = ("starttls", "tls", "none")
#: the state an account takes when its credentials are refused
FAILED_STATE = {GMAIL: "needs_reconnect", SMTP: "auth_failed"}
_LABEL = {GMAIL: "Gmail account", SMTP: "custom SMTP server"}
_CONNECT_HINT = {
    GMAIL: "maildispatch accounts gmail connect",
    SMTP: "maildispatch accounts smtp set",
}


class AccountError(MaildispatchError, ValueError):
    """Refused account input; the message says what to change."""

    exit_code = 2
    http_status = 400


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
    """A custom SMTP server, decrypted for sending (the password never in its repr)."""

    owner: str
    host: str
    port: int
    security: Security
    username: str
    password: str = field(repr=False)
    ca_pem: str | None = None
    revision: int = 1

    def server(self, timeout: float) -> SmtpServer:
        """Where and how to connect (the pool key: server and credentials)."""
        return SmtpServer(
            host=self.host,
            port=self.port,
            security=self.security,
            username=self.username,
            password=self.password,
            ca_data=self.ca_pem,
            timeout=timeout,
        )


# -- writing accounts (CLI, API) ----------------------------------------------------------------
def _check_owner(owner: str) -> str:
    owner = owner.strip()
    if not owner or len(owner) > 200:
        raise AccountError("owner must be 1 to 200 characters")
    return owner


def _check_secret(name: str, value: str) -> str:
    if not value or "\n" in value or "\r" in value or "\x00" in value:
        raise AccountError(f"{name} is empty or has a line break")
    return value


def check_ca_pem(pem: str) -> str:
    """The PEM text of one or more CA certificates, or AccountError."""
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        raise AccountError(f"not a PEM CA certificate: {exc}") from None
    return pem


def _row(session: Session, owner: str, channel: str) -> Account | None:
    return session.scalar(select(Account).where(Account.owner == owner, Account.channel == channel))


def _store(session: Session, owner: str, channel: str, **fields: Any) -> Account:
    """Insert or replace an owner's account of a channel; it starts ``connected``."""
    row = _row(session, owner, channel)
    now = utcnow()
    if row is None:
        row = Account(owner=owner, channel=channel, revision=1, created_at=now)
        session.add(row)
    else:
        row.revision = (row.revision or 0) + 1
    for name, value in fields.items():
        setattr(row, name, value)
    row.state, row.last_error, row.updated_at = "connected", "", now
    session.flush()
    return row


def connect_gmail(
    session: Session,
    vault: Vault,
    *,
    owner: str,
    email: str,
    refresh_token: str,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> Account:
    """Connect (or replace) the owner's one Gmail account.

    Without ``client_id`` the deployment's OAuth client (``MAILDISPATCH_GOOGLE_CLIENT_ID`` /
    ``_SECRET``) is used when sending.
    """
    owner = _check_owner(owner)
    try:
        email = validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise AccountError(f"not a valid email address: {exc}") from None
    secrets = {"refresh_token": _check_secret("refresh token", refresh_token.strip())}
    if (client_id is None) != (client_secret is None):
        raise AccountError("give both the OAuth client id and its secret, or neither")
    if client_id is not None and client_secret is not None:
        secrets["client_secret"] = _check_secret("client secret", client_secret.strip())
        client_id = _check_secret("client id", client_id.strip())
    return _store(
        session,
        owner,
        GMAIL,
        address=email,
        client_id=client_id,
        secret=vault.seal(owner, GMAIL, secrets),
    )


def set_smtp(
    session: Session,
    vault: Vault,
    *,
    settings: Settings,
    owner: str,
    host: str,
    port: int,
    security: str,
    username: str,
    password: str,
    ca_pem: str | None = None,
) -> Account:
    """Set (or replace) the owner's one custom SMTP server.

    A host written as an address in a blocked network (or ``localhost``) is refused here; a
    name is checked on the addresses it resolves to at every connection (worker/channels/
    netguard.py). ``none`` is refused unless the deployment allows AUTH without TLS.
    """
    owner = _check_owner(owner)
    host = host.strip()
    if not host or any(c.isspace() for c in host) or len(host) > 255:
        raise AccountError("host must be a host name or address")
    if not 0 < port < 65536:
        raise AccountError("port must be 1 to 65535")
    if security not in SECURITIES:
        raise AccountError(f"security must be one of {', '.join(SECURITIES)}")
    try:
        NetworkPolicy.from_settings(settings).check_literal(host)
    except PermanentError as exc:
        raise AccountError(f"{exc.text} (MAILDISPATCH_SMTP_BLOCKED_NETWORKS)") from None
    if security == "none" and not settings.smtp_allow_plaintext_auth:
        raise AccountError(
            "security none would send the password unencrypted, which this deployment does not "
            "allow (MAILDISPATCH_SMTP_ALLOW_PLAINTEXT_AUTH): use starttls or tls"
        )
    return _store(
        session,
        owner,
        SMTP,
        host=host,
        port=port,
        security=security,
        username=_check_secret("username", username.strip()),
        ca_pem=check_ca_pem(ca_pem) if ca_pem else None,
        secret=vault.seal(owner, SMTP, {"password": _check_secret("password", password)}),
    )


def preferred_channel(session: Session, owner: str) -> str:
    """The owner's preferred channel (``msc`` when unset)."""
    row = session.get(ChannelPreference, owner)
    return row.channel if row else DEFAULT_CHANNEL


def set_preference(session: Session, owner: str, channel: str) -> None:
    """Prefer a channel; a user channel needs a connected account of that channel."""
    owner = _check_owner(owner)
    if channel not in PREFERABLE:
        raise AccountError(f"channel must be one of {', '.join(PREFERABLE)}")
    if channel in USER_CHANNELS and _row(session, owner, channel) is None:
        raise AccountError(
            f"{owner} has no {_LABEL[channel]}; connect one first ({_CONNECT_HINT[channel]})"
        )
    row = session.get(ChannelPreference, owner)
    if row is None:
        session.add(ChannelPreference(owner=owner, channel=channel, updated_at=utcnow()))
    else:
        row.channel, row.updated_at = channel, utcnow()
    session.flush()


def remove(session: Session, owner: str, channel: str) -> tuple[bool, bool]:
    """Forget an account: (removed, preference reset to msc because it pointed there)."""
    if channel not in USER_CHANNELS:
        raise AccountError(f"channel must be one of {', '.join(USER_CHANNELS)}")
    gone = session.execute(
        delete(Account).where(Account.owner == owner, Account.channel == channel)
    )
    removed = bool(getattr(gone, "rowcount", 0))
    reset = False
    if removed and preferred_channel(session, owner) == channel:
        set_preference(session, owner, DEFAULT_CHANNEL)
        reset = True
    return removed, reset


def summaries(session: Session, owner: str | None = None) -> list[dict[str, Any]]:
    """Every owner's preference and accounts, for display: never a secret."""
    query = select(Account).order_by(Account.owner, Account.channel)
    prefs = select(ChannelPreference)
    if owner is not None:
        query = query.where(Account.owner == owner)
        prefs = prefs.where(ChannelPreference.owner == owner)
    owners: dict[str, dict[str, Any]] = {
        p.owner: {"owner": p.owner, "preferred_channel": p.channel, "accounts": []}
        for p in session.scalars(prefs)
    }
    for row in session.scalars(query):
        entry = owners.setdefault(
            row.owner, {"owner": row.owner, "preferred_channel": DEFAULT_CHANNEL, "accounts": []}
        )
        item: dict[str, Any] = {"channel": row.channel, "state": row.state}
        if row.channel == GMAIL:
            item |= {"email": row.address, "oauth_client": row.client_id or "deployment default"}
        else:
            item |= {
                "host": row.host,
                "port": row.port,
                "security": row.security,
                "username": row.username,
                "custom_ca": row.ca_pem is not None,
            }
        item |= {
            "last_error": row.last_error or None,
            "updated_at": row.updated_at.isoformat() if row.updated_at else None,
        }
        entry["accounts"].append(item)
    return [owners[o] for o in sorted(owners)]


@dataclass
class Rotation:
    """What ``rotate_key`` did."""

    rotated: int = 0
    already_current: int = 0
    unreadable: list[str] = field(default_factory=list)  # "owner/channel" of undecryptable rows


def rotate_key(session: Session, vault: Vault) -> Rotation:
    """Re-encrypt every stored secret under the current key."""
    result = Rotation()
    for row in session.scalars(select(Account)):
        if vault.is_current(row.secret):
            result.already_current += 1
            continue
        try:
            vault.open(row.owner, row.channel, row.secret)
            row.secret = vault.rotate(row.secret)
        except VaultError:
            result.unreadable.append(f"{row.owner}/{row.channel}")
            continue
        result.rotated += 1
    session.flush()
    return result


# -- the Redis mirror of preferences --------------------------------------------------------------
def mirror_preference(client: redis.Redis, owner: str, channel: str) -> None:
    """Publish one owner's preference to the producers' hash."""
    client.hset(keys.PREFERRED_CHANNEL, owner, channel)


def mirror_all(client: redis.Redis, session: Session) -> int:
    """Rewrite the producers' hash from the store (after a Redis loss); returns owners written."""
    prefs = {p.owner: p.channel for p in session.scalars(select(ChannelPreference))}
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.PREFERRED_CHANNEL)
    if prefs:
        pipe.hset(keys.PREFERRED_CHANNEL, mapping=prefs)  # type: ignore[arg-type]
    pipe.execute()
    return len(prefs)


# -- reading accounts for a send --------------------------------------------------------------------
def load(
    session: Session, vault: Vault, settings: Settings, channel: str, owner: str
) -> GmailAccount | SmtpAccount:
    """The owner's account of a channel, decrypted; PermanentError when it cannot send."""
    row = _row(session, owner, channel)
    if row is None:
        raise PermanentError(
            f"no {_LABEL[channel]} is connected for this owner; connect one with "
            f"`{_CONNECT_HINT[channel]}`",
            kind=FailedKind.CONFIG,
        )
    if row.state != "connected":
        what = row.address if channel == GMAIL else f"{row.username} at {row.host}"
        action = "reconnect" if channel == GMAIL else "set new credentials for"
        raise PermanentError(
            f"{action} the {_LABEL[channel]} ({what}) with `{_CONNECT_HINT[channel]}`: "
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
        client_id, client_secret = row.client_id, secrets.get("client_secret")
        if client_id is None:
            client_id = settings.google_client_id
            default = settings.google_client_secret
            client_secret = default.get_secret_value() if default else None
        if not client_id or not client_secret:
            raise PermanentError(
                "no Google OAuth client is configured: set MAILDISPATCH_GOOGLE_CLIENT_ID and "
                "MAILDISPATCH_GOOGLE_CLIENT_SECRET, or connect with --client-id",
                kind=FailedKind.CONFIG,
            )
        return GmailAccount(
            owner=owner,
            email=row.address or "",
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=secrets["refresh_token"],
            revision=row.revision,
        )
    return SmtpAccount(
        owner=owner,
        host=row.host or "",
        port=row.port or 0,
        security=row.security if row.security in SECURITIES else "starttls",
        username=row.username or "",
        password=secrets["password"],
        ca_pem=row.ca_pem,
        revision=row.revision,
    )


def mark_failed(
    session: Session, channel: str, owner: str, revision: int | None, reason: str
) -> str | None:
    """Flag a connected account whose credentials were refused; returns the new state.

    With ``revision`` only those credentials are flagged: a user who reconnected meanwhile
    keeps the new ones ``connected``.
    """
    state = FAILED_STATE[channel]
    query = (
        update(Account)
        .where(Account.owner == owner, Account.channel == channel, Account.state == "connected")
        .values(state=state, last_error=reason[:500], updated_at=utcnow())
    )
    if revision is not None:
        query = query.where(Account.revision == revision)
    done = session.execute(query)
    return state if getattr(done, "rowcount", 0) else None


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
