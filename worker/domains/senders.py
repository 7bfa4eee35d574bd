"""Who may send as what on MSC: verified domains and confirmed single addresses, and their
mirror in Redis where producers check identities (producers/identities.py) when
``MAILDISPATCH_REQUIRE_VERIFIED_IDENTITIES`` is on.

An address is confirmed by its mailbox: :func:`request` records it and mails a link
(``{MAILDISPATCH_PUBLIC_URL}/v1/identities/confirm/{token}``, valid 7 days) from the operator's
own domain; the link's page has a button, and only its POST confirms (mail scanners fetch links).
The token names the owner, the address and its expiry under an HMAC of the secret key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from config import keys
from config.settings import Settings
from producers.client import Dispatcher
from producers.job import InvalidJob
from worker.domains.manage import VERIFIED, DomainError
from worker.message import tokens
from worker.store.models import SenderAddress, SendingDomain, utcnow

CONFIRM_FOR = 7 * 86400
_CONTEXT = b"maildispatch-identity\x00"


@dataclass(frozen=True)
class Confirmation:
    """What a genuine confirmation link names."""

    owner: str
    address: str


def check_address(address: str) -> str:
    """The address, normalized as jobs' identities are (lowercase)."""
    try:
        return validate_email(address.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise DomainError(f"not a valid email address: {exc}") from None


def confirm_url(settings: Settings, owner: str, address: str, now: float | None = None) -> str:
    """The link mailed to the address."""
    base = _check_public_url(settings)
    expires = str(int((now or time.time()) + CONFIRM_FOR))
    token = tokens.make(settings.require_secret_key(), _CONTEXT, owner, address, expires)
    return f"{base.rstrip('/')}/v1/identities/confirm/{token}"


def _check_public_url(settings: Settings) -> str:
    if not settings.public_url:
        raise DomainError("set MAILDISPATCH_PUBLIC_URL: the confirmation link points there")
    return settings.public_url


def read(settings: Settings, token: str, now: float | None = None) -> Confirmation | None:
    """What a genuine, unexpired link names."""
    parts = tokens.read(token, settings.verifying_keys(), _CONTEXT, 3)
    if parts is None or not parts[2].isdigit() or int(parts[2]) < (now or time.time()):
        return None
    return Confirmation(parts[0], parts[1])


def request(session: Session, settings: Settings, owner: str, address: str) -> SenderAddress:
    """Record an address to confirm (again: a new link, the row kept); refused without a public
    URL, which the link needs."""
    _check_public_url(settings)
    owner = owner.strip()
    if not owner or len(owner) > 200:
        raise DomainError("owner must be 1 to 200 characters")
    address = check_address(address)
    row = session.scalar(
        select(SenderAddress).where(SenderAddress.owner == owner, SenderAddress.address == address)
    )
    if row is None:
        row = SenderAddress(owner=owner, address=address, requested_at=utcnow())
        session.add(row)
    else:
        row.requested_at = utcnow()
    session.flush()
    return row


def confirm(session: Session, client: redis.Redis, who: Confirmation) -> SenderAddress | None:
    """Mark the address confirmed (and mirror it); None when it was removed since."""
    row = session.scalar(
        select(SenderAddress).where(
            SenderAddress.owner == who.owner, SenderAddress.address == who.address
        )
    )
    if row is None:
        return None
    if row.confirmed_at is None:
        row.confirmed_at = utcnow()
    session.flush()
    client.sadd(keys.SENDERS, keys.sender(row.owner, row.address))
    return row


def listed(session: Session, owner: str | None = None) -> list[SenderAddress]:
    """Addresses (an owner's only, given one)."""
    query = select(SenderAddress).order_by(SenderAddress.owner, SenderAddress.address)
    if owner is not None:
        query = query.where(SenderAddress.owner == owner)
    return list(session.scalars(query))


def shown(row: SenderAddress) -> dict[str, object]:
    """What the CLI and the API answer."""
    return {
        "owner": row.owner,
        "address": row.address,
        "state": "confirmed" if row.confirmed_at else "pending",
        "requested_at": row.requested_at.isoformat(),
        "confirmed_at": row.confirmed_at.isoformat() if row.confirmed_at else None,
    }


def mirror_domain(client: redis.Redis, row: SendingDomain, removed: bool = False) -> None:
    """Publish one domain's state to the producers' set."""
    member = keys.sender(row.owner, "@" + row.domain)
    if row.state == VERIFIED and not removed:
        client.sadd(keys.SENDERS, member)
    else:
        client.srem(keys.SENDERS, member)


def mirror_all(client: redis.Redis, session: Session) -> int:
    """Rewrite the producers' set from the store (the scheduler, hourly; after a Redis loss)."""
    members = [
        keys.sender(d.owner, "@" + d.domain)
        for d in session.scalars(select(SendingDomain).where(SendingDomain.state == VERIFIED))
    ]
    members += [
        keys.sender(a.owner, a.address)
        for a in session.scalars(
            select(SenderAddress).where(SenderAddress.confirmed_at.is_not(None))
        )
    ]
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.SENDERS)
    if members:
        pipe.sadd(keys.SENDERS, *members)
    pipe.execute()
    return len(members)


def mail_link(dispatcher: Dispatcher, settings: Settings, owner: str, address: str) -> str:
    """Mail the confirmation link to the address, from the operator's domain; the job's id."""
    link = confirm_url(settings, owner, address)
    try:
        job_id = dispatcher.send(
            {
                "owner": owner,
                "channel": "msc",
                "identity": f"maildispatch <{settings.msc_sender_local}@{settings.msc_domain}>",
                "to": [address],
                "subject": "Confirm that mail may be sent as this address",
                "text": (
                    f"{owner} asks to send mail as {address}.\n\n"
                    f"If that is you, confirm here (the link works for 7 days):\n{link}\n\n"
                    "If you did not expect this message, ignore it: nothing changes.\n"
                ),
            }
        )
    except InvalidJob as exc:
        raise DomainError(
            f"the confirmation mail cannot be sent ({exc}): MAILDISPATCH_MSC_DOMAIN must be a "
            "domain mail can come from"
        ) from None
    return str(job_id)
