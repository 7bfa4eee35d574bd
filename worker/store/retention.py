"""Retention of Failed Sends, of the job contents kept for Resend and of the message history.

``MAILDISPATCH_FAILED_SEND_RETENTION_DAYS`` bounds how long a Failed Send row is kept,
``MAILDISPATCH_JOB_CONTENT_RETENTION_DAYS`` how long the job it refers to (body, attachments) is
kept for Resend, ``MAILDISPATCH_HISTORY_DAYS`` how long a job's outcome stays in the history
(worker/history/); 0 keeps them for ever. A job's content also goes with its last row. The
scheduler runs :func:`purge` every ``MAILDISPATCH_PURGE_INTERVAL`` (one scheduler of the fleet
at a time, worker/jobs/scheduler.py); ``maildispatch failed purge`` runs it at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, exists, select
from sqlalchemy.orm import InstrumentedAttribute

from worker.store.db import Store
from worker.store.models import (
    FailedSend,
    JobContent,
    MessageRecipient,
    MessageRecord,
    utcnow,
)

#: rows deleted per transaction: a purge of millions of rows holds no long lock
CHUNK = 2000


@dataclass(frozen=True)
class Purged:
    """How many rows a purge deleted."""

    failed_sends: int
    job_contents: int
    messages: int = 0

    def as_dict(self) -> dict[str, int]:
        """JSON-friendly counts."""
        return {
            "failed_sends": self.failed_sends,
            "job_contents": self.job_contents,
            "messages": self.messages,
        }


def purge(
    store: Store,
    failed_days: int,
    content_days: int,
    history_days: int = 0,
    now: datetime | None = None,
) -> Purged:
    """Delete Failed Sends older than ``failed_days``, job contents older than
    ``content_days`` or without rows left, and history older than ``history_days`` (a number of
    days of 0: keep for ever)."""
    now = now or utcnow()
    failed = contents = messages = 0
    if failed_days > 0:
        cutoff = now - timedelta(days=failed_days)
        old = select(FailedSend.id).where(FailedSend.created_at < cutoff)
        failed = _delete_chunked(store, old, FailedSend.id)
    if content_days > 0:
        cutoff = now - timedelta(days=content_days)
        stale = select(JobContent.job_id).where(JobContent.created_at < cutoff)
        contents = _delete_chunked(store, stale, JobContent.job_id)
    # rows and their content are written in one transaction: a content without rows is a purged
    # job's, never one being recorded
    orphans = select(JobContent.job_id).where(
        ~exists().where(FailedSend.job_id == JobContent.job_id)
    )
    contents += _delete_chunked(store, orphans, JobContent.job_id)
    if history_days > 0:
        cutoff = now - timedelta(days=history_days)
        expired = select(MessageRecord.job_id).where(MessageRecord.finished_at < cutoff)
        messages = _delete_chunked(store, expired, MessageRecord.job_id, MessageRecipient.job_id)
    return Purged(failed, contents, messages)


def _delete_chunked(
    store: Store,
    query: Select[Any],
    key: InstrumentedAttribute[Any],
    *children: InstrumentedAttribute[Any],
) -> int:
    """Delete the rows ``query`` selects (by ``key``), and the rows of ``children`` that refer
    to them, a chunk per transaction; returns how many rows of ``key``'s table."""
    total = 0
    while True:
        with store.session() as session:
            ids = list(session.scalars(query.limit(CHUNK)))
            if not ids:
                return total
            for child in children:
                session.execute(delete(child.class_).where(child.in_(ids)))
            session.execute(delete(key.class_).where(key.in_(ids)))
            total += len(ids)
