"""An owner's sending domains: keys made when one is added, the DNS records to publish, and the
check that they are published.

For ``example.com`` with selector ``md202612`` (the month it was added):

- ``md202612e._domainkey.example.com`` TXT ``v=DKIM1; k=ed25519; p=…`` and
  ``md202612r._domainkey.example.com`` TXT ``v=DKIM1; k=rsa; p=…``: MSC signs every message
  from the domain twice, Ed25519 and RSA-2048, as RFC 8463 advises while verifiers catch up;
- ``bounces.example.com`` CNAME the operator's bounce domain (``MAILDISPATCH_BOUNCE_DOMAIN``):
  the envelope sender is ``b+<token>@bounces.example.com``, so SPF (through the CNAME) and the
  bounces' MX are the operator's, and SPF aligns with From under DMARC's relaxed mode;
- ``example.com`` TXT an SPF record with ``include:<bounce domain>``, for receivers that check
  the From domain's SPF.

The domain is ``verified`` once every record is found as given; a re-check that no longer
finds one makes it ``failed`` (its mail goes back to the operator's signature) until it is.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dns.resolver
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.errors import MaildispatchError
from config.settings import Settings
from worker.accounts.vault import Vault
from worker.domains import dns as lookup
from worker.store.models import SendingDomain, utcnow

PENDING, VERIFIED, FAILED = "pending", "verified", "failed"


class DomainError(MaildispatchError, ValueError):
    """A sending domain refused (malformed, or another owner's); the message says why."""

    exit_code = 2
    http_status = 422


@dataclass(frozen=True)
class Record:
    """One DNS record to publish."""

    type: str
    name: str
    value: str

    def found(self, res: dns.resolver.Resolver) -> bool:
        """Is it published as given?"""
        if self.type == "CNAME":
            return lookup.cname(res, self.name) == self.value.lower()
        if self.value.startswith("v=spf1"):
            include = self.value.split()[1]
            return any(
                t.startswith("v=spf1") and include in t.split() for t in lookup.txt(res, self.name)
            )
        return any(_dkim_key(t) == _dkim_key(self.value) for t in lookup.txt(res, self.name))


def _dkim_key(text: str) -> tuple[str, str]:
    """(k=, p=) of a DKIM key record, whitespace ignored (publishers fold long ones)."""
    tags = dict(
        (k.strip().lower(), "".join(v.split()))
        for k, _, v in (part.partition("=") for part in text.split(";"))
    )
    return tags.get("k", "rsa"), tags.get("p", "")


def check_domain(domain: str) -> str:
    """The domain, lowercase, without a final dot (international names as A-labels)."""
    name = domain.strip().rstrip(".")
    try:
        parsed = validate_email(f"postmaster@{name}", check_deliverability=False)
    except EmailNotValidError as exc:
        raise DomainError(f"not a domain name: {exc}") from None
    ascii_domain = (parsed.ascii_domain or parsed.domain).lower()
    if "." not in ascii_domain or ascii_domain.replace(".", "").isdigit():
        raise DomainError("not a domain name: it needs at least two labels")
    return ascii_domain


def records(row: SendingDomain, settings: Settings) -> list[Record]:
    """The records the owner publishes for a domain."""
    key = f"._domainkey.{row.domain}"
    bounce = settings.bounce_domain.lower()
    return [
        Record("TXT", f"{row.selector}e{key}", f"v=DKIM1; k=ed25519; p={row.ed25519_public}"),
        Record("TXT", f"{row.selector}r{key}", f"v=DKIM1; k=rsa; p={row.rsa_public}"),
        Record("CNAME", return_domain(row.domain, settings), bounce),
        Record("TXT", row.domain, f"v=spf1 include:{bounce} ~all"),
    ]


def return_domain(domain: str, settings: Settings) -> str:
    """The domain of its return paths: ``bounces.<domain>``."""
    return f"{settings.return_path_label}.{domain}"


def add(session: Session, vault: Vault, owner: str, domain: str) -> SendingDomain:
    """Register a domain for an owner with fresh keys; the same owner adding it again gets it
    as it is (keys unchanged), another owner is refused."""
    owner = owner.strip()
    if not owner or len(owner) > 200:
        raise DomainError("owner must be 1 to 200 characters")
    domain = check_domain(domain)
    row = session.scalar(select(SendingDomain).where(SendingDomain.domain == domain))
    if row is not None:
        if row.owner != owner:
            raise DomainError(f"{domain} is registered by another owner")
        return row
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raw = serialization.Encoding.Raw
    seed = ed_key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    ed_public = ed_key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    rsa_public = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    secrets = {"ed25519": base64.b64encode(seed).decode(), "rsa": rsa_pem.decode()}
    row = SendingDomain(
        domain=domain,
        owner=owner,
        state=PENDING,
        selector=f"md{utcnow():%Y%m}",
        ed25519_public=base64.b64encode(ed_public).decode(),
        rsa_public=base64.b64encode(rsa_public).decode(),
        secret=vault.seal(owner, f"domain:{domain}", secrets),
        checks="{}",
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def get(session: Session, domain: str) -> SendingDomain | None:
    """A registered domain."""
    try:
        name = check_domain(domain)
    except DomainError:
        return None
    return session.scalar(select(SendingDomain).where(SendingDomain.domain == name))


def remove(session: Session, row: SendingDomain) -> None:
    """Forget a domain and its keys (its mail is signed by the operator again)."""
    session.delete(row)
    session.flush()


def listed(session: Session, owner: str | None = None) -> list[SendingDomain]:
    """Registered domains (an owner's only, given one), by name."""
    query = select(SendingDomain).order_by(SendingDomain.domain)
    if owner is not None:
        query = query.where(SendingDomain.owner == owner)
    return list(session.scalars(query))


def verify(row: SendingDomain, settings: Settings) -> SendingDomain:
    """Look every record up and update the domain's state (the caller commits)."""
    res = lookup.resolver(settings)
    checks = {r.name + " " + r.type: r.found(res) for r in records(row, settings)}
    row.checks = json.dumps(checks, sort_keys=True)
    row.checked_at = utcnow()
    if all(checks.values()):
        if row.state != VERIFIED:
            row.verified_at = row.checked_at
        row.state = VERIFIED
    elif row.state == VERIFIED:
        row.state = FAILED
    return row


def shown(row: SendingDomain, settings: Settings) -> dict[str, Any]:
    """What the CLI and the API answer: the records to publish and each one's state."""
    checks: dict[str, bool] = json.loads(row.checks or "{}")
    wanted = []
    for r in records(row, settings):
        seen = checks.get(r.name + " " + r.type)
        state = "unchecked" if seen is None else "found" if seen else "missing"
        wanted.append({"type": r.type, "name": r.name, "value": r.value, "state": state})
    return {
        "domain": row.domain,
        "owner": row.owner,
        "state": row.state,
        "return_path_domain": return_domain(row.domain, settings),
        "records": wanted,
        "checked_at": row.checked_at.isoformat() if row.checked_at else None,
        "verified_at": row.verified_at.isoformat() if row.verified_at else None,
    }


def recheck(session: Session, settings: Settings, now: datetime | None = None) -> int:
    """Verify again every domain due (verified or failed ones every
    ``MAILDISPATCH_DOMAIN_RECHECK_INTERVAL``, pending ones at least hourly); returns how many."""
    now = now or utcnow()
    done = 0
    for row in listed(session):
        every = settings.domain_recheck_interval
        if row.state == PENDING:
            every = min(every, 3600.0)
        checked = row.checked_at
        if checked is not None and checked.tzinfo is None:
            checked = checked.replace(tzinfo=UTC)
        if checked is None or (now - checked).total_seconds() >= every:
            verify(row, settings)
            done += 1
    return done
