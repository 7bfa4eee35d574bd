"""Writing and listing connected accounts (the CLI's ``accounts`` commands and the HTTP API).

Per owner at most one Gmail account, one custom SMTP server (a password, or an OAuth grant for
Microsoft 365 or Google: XOAUTH2), and the owner's preferred channel (``msc`` when unset). The
preferred channel is mirrored into the Redis hash ``config.keys.PREFERRED_CHANNEL``, where
producers resolve the channel of a job that names none (``producers.client``). Nothing here
returns a secret; :mod:`worker.accounts.connected` reads accounts for sending.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

import redis
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from config import keys
from config.channels import DEFAULT_CHANNEL
from config.errors import MaildispatchError
from config.settings import Settings
from worker.accounts.connected import (
    CONNECT_HINT,
    GMAIL,
    LABEL,
    PASSWORD,
    PREFERABLE,
    SECURITIES,
    SMTP,
    USER_CHANNELS,
    XOAUTH2,
    account_row,
)
from worker.accounts.oauth import PROVIDERS
from worker.accounts.vault import Vault, VaultError
from worker.channels.netguard import NetworkPolicy
from worker.errors import PermanentError
from worker.store.models import Account, ChannelPreference, utcnow


class AccountError(MaildispatchError, ValueError):
    """Refused account input; the message says what to change."""

    exit_code = 2
    http_status = 422


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


def _store(session: Session, owner: str, channel: str, **fields: Any) -> Account:
    """Insert or replace an owner's account of a channel; it starts ``connected``."""
    row = account_row(session, owner, channel)
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


@dataclass(frozen=True)
class OAuthLogin:
    """How a custom SMTP server is logged in to with XOAUTH2 (secrets never in its repr)."""

    provider: str  # "microsoft" | "google"
    refresh_token: str = field(repr=False)
    client_id: str | None = None  # None: the deployment's MAILDISPATCH_<PROVIDER>_CLIENT_ID
    client_secret: str | None = field(default=None, repr=False)


def set_smtp(
    session: Session,
    vault: Vault,
    *,
    settings: Settings,
    owner: str,
    username: str,
    host: str | None = None,
    port: int | None = None,
    security: str | None = None,
    password: str | None = None,
    oauth: OAuthLogin | None = None,
    ca_pem: str | None = None,
) -> Account:
    """Set (or replace) the owner's one custom SMTP server, with a password or an OAuth grant.

    With ``oauth`` the server defaults to the provider's (``MAILDISPATCH_MICROSOFT_SMTP_SERVER``,
    ``smtp.office365.com:587``, or ``_GOOGLE_``, ``smtp.gmail.com:587``; STARTTLS) and the username is the mailbox's address. A host written
    as an address in a blocked network (or ``localhost``) is refused here; a name is checked on
    the addresses it resolves to at every connection (worker/channels/netguard.py). ``none`` is
    refused unless the deployment allows AUTH without TLS.
    """
    owner = _check_owner(owner)
    if (password is None) == (oauth is None):
        raise AccountError("give either a password or an OAuth grant (--auth xoauth2)")
    provider = PROVIDERS.get(oauth.provider) if oauth else None
    if oauth is not None and provider is None:
        raise AccountError(f"provider must be one of {', '.join(PROVIDERS)}")
    if provider is not None:
        default_host, default_port = provider.smtp_server(settings)
        host, port = host or default_host, port or default_port
    host = (host or "").strip()
    port = port or 0
    security = security or ("starttls" if provider else "")
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
            "security none would send the credentials unencrypted, which this deployment does "
            "not allow (MAILDISPATCH_SMTP_ALLOW_PLAINTEXT_AUTH): use starttls or tls"
        )
    username = _check_secret("username", username.strip())
    fields: dict[str, Any] = {"auth": PASSWORD, "provider": None, "client_id": None}
    if oauth is not None and provider is not None:
        try:
            validate_email(username, check_deliverability=False)
        except EmailNotValidError as exc:
            raise AccountError(f"the username must be the mailbox's address: {exc}") from None
        secrets = _oauth_secrets(settings, provider.name, oauth)
        fields = {"auth": XOAUTH2, "provider": provider.name, "client_id": oauth.client_id}
    else:
        secrets = {"password": _check_secret("password", password or "")}
    return _store(
        session,
        owner,
        SMTP,
        host=host,
        port=port,
        security=security,
        username=username,
        ca_pem=check_ca_pem(ca_pem) if ca_pem else None,
        secret=vault.seal(owner, SMTP, secrets),
        **fields,
    )


def _oauth_secrets(settings: Settings, provider: str, oauth: OAuthLogin) -> dict[str, str]:
    secrets = {"refresh_token": _check_secret("refresh token", oauth.refresh_token.strip())}
    if (oauth.client_id is None) != (oauth.client_secret is None):
        raise AccountError("give both the OAuth client id and its secret, or neither")
    if oauth.client_id is not None and oauth.client_secret is not None:
        _check_secret("client id", oauth.client_id)
        secrets["client_secret"] = _check_secret("client secret", oauth.client_secret.strip())
    elif PROVIDERS[provider].deployment_client(settings) is None:
        raise AccountError(
            "no OAuth client: give the client id and secret, or set "
            + PROVIDERS[provider].client_settings()
        )
    return secrets


def preferred_channel(session: Session, owner: str) -> str:
    """The owner's preferred channel (``msc`` when unset)."""
    row = session.get(ChannelPreference, owner)
    return row.channel if row else DEFAULT_CHANNEL


def set_preference(session: Session, owner: str, channel: str) -> None:
    """Prefer a channel; a user channel needs a connected account of that channel."""
    owner = _check_owner(owner)
    if channel not in PREFERABLE:
        raise AccountError(f"channel must be one of {', '.join(PREFERABLE)}")
    if channel in USER_CHANNELS and account_row(session, owner, channel) is None:
        raise AccountError(
            f"{owner} has no {LABEL[channel]}; connect one first ({CONNECT_HINT[channel]})"
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
                "auth": row.auth or PASSWORD,
                "custom_ca": row.ca_pem is not None,
            }
            if row.auth == XOAUTH2:
                item |= {
                    "provider": row.provider,
                    "oauth_client": row.client_id or "deployment default",
                }
        item |= {
            "last_error": row.last_error or None,
            "updated_at": row.updated_at.isoformat() if row.updated_at else None,
        }
        entry["accounts"].append(item)
    return [owners[o] for o in sorted(owners)]


def summary(session: Session, owner: str, channel: str) -> dict[str, Any]:
    """One account of an owner as :func:`summaries` shows it, with its owner (no secret)."""
    for entry in summaries(session, owner):
        for account in entry["accounts"]:
            if account["channel"] == channel:
                return {"owner": owner, **account}
    return {"owner": owner, "channel": channel}


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
