"""Reading the message history: an owner's messages newest first, and one job's status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.store.models import MessageRecipient, MessageRecord, stored_utc


@dataclass(frozen=True)
class Message:
    """A job of the history as listings show it."""

    job_id: str
    owner: str
    channel: str
    state: str
    recipients: list[str]
    metadata: dict[str, Any]
    status: dict[str, str]
    finished_at: datetime

    def state_hash(self) -> dict[str, str]:
        """Its state as Redis held it (what ``status`` and ``GET /v1/messages/{id}`` read)."""
        return {**self.status, "owner": self.owner, "channel": self.channel}

    def as_dict(self) -> dict[str, Any]:
        """The JSON of a listing's item (times as epoch seconds, as the status shows them)."""
        status = self.status

        def number(name: str) -> float | None:
            value = status.get(name)
            return float(value) if value not in (None, "", "0") else None

        return {
            "id": self.job_id,
            "owner": self.owner,
            "channel": self.channel,
            "state": self.state,
            "recipients": self.recipients,
            "metadata": self.metadata,
            "subject": status.get("subject"),
            "attempts": int(status.get("attempts") or 0),
            "enqueued_at": number("enqueued_at"),
            "updated_at": number("updated_at"),
            "finished_at": self.finished_at.timestamp(),
            "reply": status.get("reply"),
            "last_error": status.get("last_error"),
            "provider_id": status.get("provider_id"),
            "from_address": status.get("from_address"),
        }


@dataclass(frozen=True)
class Page:
    """A page of messages and the cursor of the next (older) one (None: the last page)."""

    items: list[Message]
    next_cursor: int | None


def list_messages(
    session: Session,
    owner: str | None = None,
    *,
    recipient: str | None = None,
    state: str | None = None,
    since: datetime | None = None,
    cursor: int | None = None,
    limit: int = 50,
) -> Page:
    """An owner's messages (every owner's with None), newest outcome first; ``cursor`` is the
    previous page's ``next_cursor``; ``recipient`` finds one address's, whatever its case;
    ``since`` keeps those whose outcome was recorded since then."""
    query = select(MessageRecord).order_by(MessageRecord.id.desc()).limit(limit + 1)
    if owner is not None:
        query = query.where(MessageRecord.owner == owner)
    if recipient:
        wanted = select(MessageRecipient.job_id).where(
            func.lower(MessageRecipient.address) == recipient.strip().lower()
        )
        if owner is not None:
            wanted = wanted.where(MessageRecipient.owner == owner)
        query = query.where(MessageRecord.job_id.in_(wanted))
    if state:
        query = query.where(MessageRecord.state == state)
    if since:
        query = query.where(MessageRecord.finished_at >= since)
    if cursor:
        query = query.where(MessageRecord.id < cursor)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    recipients = _recipients(session, rows)
    items = [_message(r, recipients.get(r.job_id, [])) for r in rows]
    return Page(items, rows[-1].id if more and rows else None)


def get_message(session: Session, job_id: str) -> Message | None:
    """One job of the history (None when it has none: unknown, not final, or purged)."""
    row = session.scalar(select(MessageRecord).where(MessageRecord.job_id == job_id))
    if row is None:
        return None
    return _message(row, _recipients(session, [row]).get(job_id, []))


def _recipients(session: Session, rows: list[MessageRecord]) -> dict[str, list[str]]:
    """Each job's recipients, those its owner's job named only: a job id reused by another
    owner once the first job left Redis must not add its recipients to the first job's."""
    found: dict[str, list[str]] = {}
    if not rows:
        return found
    owners = {r.job_id: r.owner for r in rows}
    query = (
        select(MessageRecipient.job_id, MessageRecipient.address, MessageRecipient.owner)
        .where(MessageRecipient.job_id.in_(list(owners)))
        .order_by(MessageRecipient.job_id, MessageRecipient.address)
    )
    for job_id, address, owner in session.execute(query):
        if owners.get(job_id) == owner:
            found.setdefault(job_id, []).append(address)
    return found


def _message(row: MessageRecord, recipients: list[str]) -> Message:
    return Message(
        job_id=row.job_id,
        owner=row.owner,
        channel=row.channel,
        state=row.state,
        recipients=recipients,
        metadata=dict(row.job_metadata or {}),
        status={str(k): str(v) for k, v in (row.status or {}).items()},
        finished_at=stored_utc(row.finished_at),
    )
