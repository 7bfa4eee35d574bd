"""Webhook endpoints: where an owner's events are pushed, each with its own signing secret.

An endpoint belongs to an owner (it receives that owner's events) or to the operator (``owner``
None: every owner's). Its secret (``whsec_`` and 24 random bytes, base64, as Standard Webhooks
writes them) is shown once, when the endpoint is added, and kept only encrypted (the accounts'
vault). Its URL must be http(s) and not on a network user-supplied destinations may not reach
(``MAILDISPATCH_SMTP_BLOCKED_NETWORKS``, checked here for literal addresses and again for the
resolved ones at each delivery).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.errors import MaildispatchError
from config.events import EVENT_TYPES
from worker.accounts.vault import Vault
from worker.channels.netguard import NetworkPolicy
from worker.errors import PermanentError
from worker.store.models import WebhookEndpoint, stored_utc

#: the vault's binding of an endpoint's secret (an account's is its channel)
_SEALED_AS = "webhook"
ENABLED, DISABLED = "enabled", "disabled"


class InvalidEndpoint(MaildispatchError):
    """An endpoint that cannot be added (its URL, its event types)."""

    exit_code = 2
    http_status = 422


@dataclass(frozen=True)
class Endpoint:
    """An endpoint as the scheduler and the deliverer use it (its secret stays sealed: see
    :func:`secret_of`)."""

    id: int
    owner: str | None
    url: str
    events: tuple[str, ...] | None
    state: str
    created_at: float

    def wants(self, owner: str, kind: str, at: float) -> bool:
        """Does it receive this event (an owner's, of this type, written at ``at``)?"""
        return (
            self.state == ENABLED
            and (self.owner is None or self.owner == owner)
            and (self.events is None or kind in self.events)
            and at >= self.created_at
        )


def new_secret() -> str:
    """A signing secret, as Standard Webhooks writes them."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def check(url: str, events: Sequence[str] | None, policy: NetworkPolicy) -> str:
    """The URL as stored, or :class:`InvalidEndpoint` naming what is wrong."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or len(url) > 2000:
        raise InvalidEndpoint("url: an http(s) URL of at most 2,000 characters")
    if parts.username or parts.password:
        raise InvalidEndpoint("url: credentials do not belong in the URL")
    try:
        parts.hostname.encode("idna")  # a name DNS can carry (no empty or over-long label)
    except UnicodeError:
        raise InvalidEndpoint("url: the host is not a name DNS can look up") from None
    try:
        policy.check_literal(parts.hostname)
    except PermanentError as exc:
        raise InvalidEndpoint(f"url: {exc}") from None
    unknown = sorted(set(events or ()) - set(EVENT_TYPES))
    if unknown:
        raise InvalidEndpoint(f"events: unknown {', '.join(unknown)}; use {', '.join(EVENT_TYPES)}")
    return url


def add(
    session: Session,
    vault: Vault,
    policy: NetworkPolicy,
    owner: str | None,
    url: str,
    events: Sequence[str] | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Add an endpoint (``owner`` None or ``*``: every owner's events); returns its row and its
    secret (shown once)."""
    url = check(url, events, policy)
    owner = None if owner in (None, "*") else owner
    secret = new_secret()
    row = WebhookEndpoint(
        owner=owner,
        url=url,
        events=sorted(set(events)) if events else None,
        secret=vault.seal(owner or "*", _SEALED_AS, {"secret": secret}),
        state=ENABLED,
        disabled_reason="",
    )
    session.add(row)
    session.flush()
    return row, secret


def shown(row: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as the CLI and the API show it (never its secret)."""
    return {
        "id": row.id,
        "owner": row.owner,
        "url": row.url,
        "events": row.events,
        "state": row.state,
        "disabled_reason": row.disabled_reason or None,
        "created_at": stored_utc(row.created_at).isoformat(),
    }


def listed(session: Session, owner: str | None = None) -> list[WebhookEndpoint]:
    """Endpoints, oldest first (an owner's only, given one)."""
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.id)
    if owner is not None:
        query = query.where(WebhookEndpoint.owner == owner)
    return list(session.scalars(query))


def get(session: Session, endpoint_id: int) -> WebhookEndpoint | None:
    """One endpoint."""
    return session.get(WebhookEndpoint, endpoint_id)


def remove(session: Session, endpoint_id: int) -> bool:
    """Delete an endpoint (its undelivered events are dropped by the deliverer)."""
    row = session.get(WebhookEndpoint, endpoint_id)
    if row is None:
        return False
    session.delete(row)
    return True


def disable(session: Session, endpoint_id: int, reason: str) -> None:
    """Stop delivering to an endpoint, with the reason shown in its listing."""
    row = session.get(WebhookEndpoint, endpoint_id)
    if row is not None and row.state == ENABLED:
        row.state, row.disabled_reason = DISABLED, reason[:1000]


def enable(session: Session, endpoint_id: int) -> bool:
    """Deliver to a disabled endpoint again (a replay sends what it missed)."""
    row = session.get(WebhookEndpoint, endpoint_id)
    if row is None:
        return False
    row.state, row.disabled_reason = ENABLED, ""
    return True


def active(session: Session) -> list[Endpoint]:
    """Every enabled endpoint (what the scheduler fans events out to)."""
    rows = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.state == ENABLED))
    return [endpoint_of(row) for row in rows]


def endpoint_of(row: WebhookEndpoint) -> Endpoint:
    """An endpoint row as the scheduler and the deliverer use it."""
    created: datetime = stored_utc(row.created_at)
    return Endpoint(
        id=row.id,
        owner=row.owner,
        url=row.url,
        events=tuple(row.events) if row.events else None,
        state=row.state,
        created_at=created.timestamp(),
    )


def secret_of(row: WebhookEndpoint, vault: Vault) -> str:
    """An endpoint's signing secret, decrypted (for the deliverer only)."""
    return vault.open(row.owner or "*", _SEALED_AS, row.secret)["secret"]
