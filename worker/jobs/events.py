"""The events of a delivery attempt's outcomes (config/events.py), built from the job in hand.

Each function returns ``(owner, event JSON)`` for :class:`~worker.jobs.state.JobStates`, which
writes it with the state change it reports. The parts that make an event's id are what the
event says (the recipients, the attempt, the failure's kind): the same outcome written twice
is the same event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from config.events import EventType, encode, job_data, rfc3339
from producers.job import SendJob
from worker.bounces.classify.model import Bounce
from worker.errors import DeliveryError

Event = tuple[str, str]


def _event(
    event_type: EventType,
    job: SendJob,
    channel: str,
    recipients: Sequence[str],
    parts: Sequence[object],
    **extra: Any,
) -> Event:
    data = job_data(str(job.id), job.owner, channel, recipients, job.metadata, **extra)
    return job.owner, encode(event_type, data, *parts)


def sent(
    job: SendJob,
    channel: str,
    recipients: Sequence[str],
    attempt: int,
    fields: dict[str, Any],
) -> Event:
    """The relay (or Google) accepted the message for ``recipients``."""
    return _event(
        EventType.SENT,
        job,
        channel,
        recipients,
        sorted(recipients),
        attempt=attempt,
        provider_id=fields.get("provider_id"),
        reply=fields.get("reply"),
        from_address=fields.get("from_address"),
        from_replaced=fields.get("from_replaced") == "yes",
    )


def failed(
    job: SendJob,
    channel: str,
    recipients: Sequence[str],
    error: DeliveryError,
    reason: str,
    hard: bool,
) -> Event:
    """``recipients`` will not get the message (a Failed Send row each)."""
    return failure(
        str(job.id),
        job.owner,
        channel,
        recipients,
        job.metadata,
        kind=str(error.kind),
        reason=reason,
        hard=hard,
        reply_code=error.reply_code,
        enhanced_status=error.enhanced_status,
        diagnostic=error.text,
    )


def failure(
    job_id: str,
    owner: str,
    channel: str,
    recipients: Sequence[str],
    metadata: dict[str, Any],
    *,
    kind: str,
    reason: str,
    hard: bool,
    reply_code: int | None,
    enhanced_status: str | None,
    diagnostic: str,
) -> Event:
    """A ``message.failed`` from what is known of the job (also without the job itself: one
    lost from the schedule has only its state's owner and channel)."""
    data = job_data(
        job_id,
        owner,
        channel,
        recipients,
        metadata,
        kind=kind,
        reason=reason,
        hard=hard,
        reply_code=reply_code,
        enhanced_status=enhanced_status,
        diagnostic=diagnostic[:1000],
    )
    return owner, encode(EventType.FAILED, data, kind, *sorted(recipients))


def retrying(
    job: SendJob,
    channel: str,
    recipients: Sequence[str],
    attempt: int,
    due: float,
    error: DeliveryError,
) -> Event:
    """A transient failure: tried again at ``due``."""
    return _event(
        EventType.RETRYING,
        job,
        channel,
        recipients,
        [attempt],
        attempt=attempt,
        next_attempt_at=rfc3339(due),
        reply_code=error.reply_code,
        enhanced_status=error.enhanced_status,
        error=error.describe()[:500],
    )


def deferred(
    job: SendJob, channel: str, recipients: Sequence[str], due: float, scope: str
) -> Event:
    """Over a fleet-wide rate limit: taken again at ``due``, no attempt used."""
    return _event(
        EventType.DEFERRED,
        job,
        channel,
        recipients,
        [repr(due), scope],
        next_attempt_at=rfc3339(due),
        limit=scope,
    )


def bounced(
    job_id: str,
    owner: str,
    channel: str,
    metadata: dict[str, Any],
    recipient: str,
    bounce: Bounce,
    suppressed: bool,
) -> Event:
    """A bounce report for one recipient (``bounce``: the classifier's Bounce)."""
    data = job_data(
        job_id,
        owner,
        channel,
        [recipient],
        metadata,
        reason=bounce.reason or "undefined",
        enhanced_status=bounce.status or None,
        reply_code=int(bounce.reply_code) if bounce.reply_code.isdigit() else None,
        hard=bounce.hard,
        diagnostic=(bounce.diagnostic or "")[:1000],
        suppressed=suppressed,
    )
    return owner, encode(EventType.BOUNCED, data, recipient, bounce.status, bounce.reason)


def complained(
    job_id: str,
    owner: str,
    channel: str,
    metadata: dict[str, Any],
    recipient: str,
    feedback_type: str,
) -> Event:
    """A recipient's complaint (an ARF report from a feedback loop): the address is suppressed."""
    data = job_data(
        job_id, owner, channel, [recipient], metadata, feedback_type=feedback_type, suppressed=True
    )
    return owner, encode(EventType.COMPLAINED, data, recipient, feedback_type)
