"""Resend a Failed Send: enqueue the original job again as a new job, and link the two."""

from __future__ import annotations

import uuid
from typing import Any

from producers.client import Dispatcher
from worker.store import Store, repo


class CannotResend(ValueError):
    """The Failed Send cannot be resent (unknown, or its job was not kept)."""


def resend(store: Store, dispatcher: Dispatcher, failed_id: int) -> uuid.UUID:
    """Enqueue a copy of the failed job to the failed recipient; returns the new job id."""
    with store.session() as session:
        row = repo.get_failed_send(session, failed_id)
        if row is None:
            raise CannotResend(f"no Failed Send {failed_id}")
        if row.resend_job_id:
            return uuid.UUID(row.resend_job_id)
        if not row.job:
            raise CannotResend(f"Failed Send {failed_id} has no job to resend")
        wire: dict[str, Any] = dict(row.job)
        recipient = row.recipient.lower()
        for field in ("to", "cc", "bcc"):
            wire[field] = [m for m in wire.get(field, []) if _address(m).lower() == recipient]
        wire["id"] = str(uuid.uuid4())
        wire.pop("idempotency_key", None)
        wire["metadata"] = {**wire.get("metadata", {}), "resend_of": failed_id}
        new_id = dispatcher.send(wire)
        row.resend_job_id = str(new_id)
        return new_id


def _address(mailbox: Any) -> str:
    return str(mailbox.get("address", "")) if isinstance(mailbox, dict) else str(mailbox)
