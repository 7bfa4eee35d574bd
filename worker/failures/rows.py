"""A Failed Send row: built in one place (delivery, bounce ingest, lost jobs), shown in one shape
(the HTTP API and the CLI's ``--json``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from worker.failures.kinds import FailedKind
from worker.failures.send_reasons import plain_words
from worker.store.models import FailedSend, stored_utc


def failed_send_row(
    *,
    job_id: str,
    owner: str,
    channel: str,
    recipient: str,
    kind: FailedKind,
    reason: str,
    hard: bool,
    diagnostic: str,
    subject: str,
    identity: str,
    metadata: dict[str, Any] | None,
    reply_code: int | None = None,
    enhanced_status: str | None = None,
    action: str | None = None,
    job: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One row as the store takes it (``repo.record_failed_sends``, which fits every field to
    its column); ``job``: the job as enqueued, kept once per job so that it can be resent."""
    return {
        "job_id": job_id,
        "owner": owner,
        "channel": channel,
        "recipient": recipient,
        "kind": kind,
        "action": action,
        "reply_code": reply_code,
        "enhanced_status": enhanced_status,
        "reason": reason,
        "hard": hard,
        "diagnostic": diagnostic[:2000],
        "subject": subject,
        "identity": identity,
        "job_metadata": metadata,
        "job": job,
    }


class FailedSendOut(BaseModel):
    """One recipient of one job that was not delivered."""

    id: int
    job_id: str
    owner: str
    channel: str
    recipient: str
    kind: str
    #: the report's action for a bounce ("failed"); None for a failure at send time
    action: str | None
    reply_code: int | None
    enhanced_status: str | None
    reason: str
    #: the reason as a person reads it, e.g. "Mailbox does not exist (5.1.1)"
    reason_text: str
    hard: bool
    diagnostic: str
    subject: str
    identity: str
    created_at: datetime
    resend_job_id: str | None
    metadata: dict[str, Any]


def failed_out(row: FailedSend) -> FailedSendOut:
    """The shown form of a row (the stored job, with its body, stays inside)."""
    return FailedSendOut(
        id=row.id,
        job_id=row.job_id,
        owner=row.owner,
        channel=row.channel,
        recipient=row.recipient,
        kind=row.kind,
        action=row.action,
        reply_code=row.reply_code,
        enhanced_status=row.enhanced_status,
        reason=row.reason,
        reason_text=plain_words(row.reason, row.enhanced_status),
        hard=row.hard,
        diagnostic=row.diagnostic,
        subject=row.subject,
        identity=row.identity,
        created_at=stored_utc(row.created_at),
        resend_job_id=row.resend_job_id,
        metadata=row.job_metadata or {},
    )
