"""Resend a Failed Send: enqueue the original job again as a new job, and link the two.

Resend is idempotent: the new job's idempotency key is derived from the Failed Send's id, so a
double click (two requests at once, or one after the other) enqueues one job and both answer its
id; the row keeps the link (the first one wins) once the idempotency key has expired.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError

from producers.client import Dispatcher, IdempotencyInProgress
from producers.job import InvalidJob, Mailbox, parse_job
from worker.store import Store, repo


class CannotResend(ValueError):
    """The Failed Send cannot be resent (unknown, or its job was not kept)."""


def resend_key(failed_id: int) -> str:
    """The idempotency key of the job that resends a Failed Send."""
    return f"maildispatch-resend:{failed_id}"


def resend(store: Store, dispatcher: Dispatcher, failed_id: int) -> uuid.UUID:
    """Enqueue a copy of the failed job to the failed recipient; returns the new job id."""
    with store.session() as session:
        row = repo.get_failed_send(session, failed_id)
        if row is None:
            raise CannotResend(f"no Failed Send {failed_id}")
        if row.resend_job_id:
            return uuid.UUID(row.resend_job_id)
        wire = repo.job_content(session, row.job_id, row.owner)
        if not wire:
            raise CannotResend(
                f"Failed Send {failed_id} has no job to resend (a bounce's message is not kept, "
                "and a failed job's only for MAILDISPATCH_JOB_CONTENT_RETENTION_DAYS)"
            )
        recipient = row.recipient
    try:
        new_id = dispatcher.send(resend_wire(wire, recipient, failed_id))
    except InvalidJob as exc:  # e.g. over this deployment's limits now
        raise CannotResend(f"the stored job cannot be enqueued again: {exc}") from None
    except IdempotencyInProgress:  # the other click is still enqueueing it
        raise CannotResend(f"Failed Send {failed_id} is being resent; try again") from None
    with store.session() as session:
        return uuid.UUID(repo.mark_resent(session, failed_id, str(new_id)))


def resend_wire(wire: dict[str, Any], recipient: str, failed_id: int) -> dict[str, Any]:
    """The new job: the stored one, to the failed recipient only (in the field it was in).

    The stored job is read with the same model as any job, so a recipient given as
    ``Name <addr>`` is compared by its address, as the Failed Send row recorded it.
    """
    try:
        job = parse_job(wire)
    except InvalidJob as exc:  # kept from an older version whose rules were looser
        raise CannotResend(f"the stored job is not valid any more: {exc}") from None
    wanted = _comparable(recipient)
    fields = {f: _only(getattr(job, f), wanted) for f in ("to", "cc", "bcc")}
    if not any(fields.values()):
        raise CannotResend(f"{recipient} is not a recipient of the stored job")
    # sent now, under a new id: the key makes a second click answer the same job
    new = job.model_dump(
        mode="json", exclude_defaults=True, exclude={"id", "idempotency_key", "send_at"}
    )
    new.update({f: [b.model_dump(exclude_none=True) for b in boxes] for f, boxes in fields.items()})
    new["idempotency_key"] = resend_key(failed_id)
    new["metadata"] = {**job.metadata, "resend_of": failed_id}
    return new


def _only(boxes: tuple[Mailbox, ...], wanted: str) -> list[Mailbox]:
    return [b for b in boxes if _comparable(b.address) == wanted]


def _comparable(address: str) -> str:
    """An address as validation writes it today (the row may be older), for comparison."""
    try:
        return Mailbox(address=address).address.lower()
    except ValidationError:
        return address.lower()
