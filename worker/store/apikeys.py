"""API keys of calling services: created once and shown once; only a SHA-256 hash is kept.

A key acts for every owner, or, created with an owner, for that owner only: it sends only that
owner's jobs and reads only that owner's job state and Failed Sends (a product can hand such a
key, or a page session signed in with it, to one of its users).

A key is ``md_`` plus 43 URL-safe characters (256 random bits). Such a key cannot be guessed, so a
plain SHA-256 (not a slow password hash) is enough, and a lookup is one indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.errors import MaildispatchError
from worker.store.models import ApiKey, utcnow

SCOPES = frozenset({"send", "read"})
KEY_PREFIX = "md_"
_SHOWN_PREFIX = 11  # "md_" and 8 characters: enough to tell keys apart in a listing


class InvalidScopes(MaildispatchError, ValueError):
    """A scope outside :data:`SCOPES` was asked for."""

    exit_code = 2
    http_status = 400


@dataclass(frozen=True)
class KeyInfo:
    """An API key as listed (never the key itself)."""

    id: int
    name: str
    prefix: str
    scopes: frozenset[str]
    #: None: every owner
    owner: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def key_hash(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(text: str) -> frozenset[str]:
    """``"send,read"`` -> the scopes, refusing unknown ones."""
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = scopes - SCOPES
    if unknown or not scopes:
        raise InvalidScopes(
            f"unknown scope(s) {sorted(unknown)}; use {sorted(SCOPES)}"
            if unknown
            else "at least one scope is required"
        )
    return scopes


def create_key(
    session: Session, name: str, scopes: frozenset[str], owner: str | None = None
) -> tuple[str, KeyInfo]:
    """A new key for a service (for one owner's use only, given ``owner``): returns the key (to
    show once) and what is stored of it."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name,
        prefix=key[:_SHOWN_PREFIX],
        key_hash=key_hash(key),
        scopes=",".join(sorted(scopes)),
        owner=owner,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return key, _info(row)


def list_keys(session: Session) -> list[KeyInfo]:
    """Every key, oldest first."""
    return [_info(r) for r in session.scalars(select(ApiKey).order_by(ApiKey.id))]


def revoke_key(session: Session, id_or_prefix: str) -> list[KeyInfo]:
    """Revoke the key with this id or shown prefix; returns what was revoked."""
    query = select(ApiKey).where(ApiKey.revoked_at.is_(None))
    if id_or_prefix.isdigit():
        query = query.where(ApiKey.id == int(id_or_prefix))
    else:
        query = query.where(ApiKey.prefix == id_or_prefix)
    rows = list(session.scalars(query))
    for row in rows:
        row.revoked_at = utcnow()
    return [_info(r) for r in rows]


def find_key(session: Session, key: str, *, touch: bool = True) -> KeyInfo | None:
    """The active key matching ``key`` (and note its use), or None."""
    row = session.scalars(
        select(ApiKey).where(ApiKey.key_hash == key_hash(key), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    if touch:
        row.last_used_at = utcnow()
    return _info(row)


def get_key(session: Session, key_id: int) -> KeyInfo | None:
    """An active key by id (a signed page session names its key by id)."""
    row = session.get(ApiKey, key_id)
    return _info(row) if row is not None and row.revoked_at is None else None


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=frozenset(s for s in row.scopes.split(",") if s),
        owner=row.owner,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
