"""What an enqueue can answer besides ids (all MaildispatchError, config/errors.py).

ValueError
├── InvalidJob (producers/job.py)     one job broke the contract or a limit
│   └── JobIdTaken                    its id belongs to another job (existing, or earlier in the call)
└── InvalidJobs                       some jobs of a call were invalid; nothing was enqueued
    └── JobIdsTaken                   some jobs' ids were taken; nothing was enqueued
RuntimeError
├── IdempotencyInProgress             a key is being enqueued by another call
└── EnqueueFailed                     the broker or Redis failed past the retry bound; names
                                      exactly which jobs were enqueued (and keep their state)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from config.errors import MaildispatchError
from producers.job import FieldError, InvalidJob


class InvalidJobs(MaildispatchError, ValueError):
    """Some jobs of a ``send_many`` call were invalid; nothing was enqueued."""

    exit_code = 2
    http_status = 422

    def __init__(self, errors: Sequence[InvalidJob]) -> None:
        self.errors = list(errors)
        shown = "; ".join(str(e) for e in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(f"{len(self.errors)} invalid job(s): {shown}{more}")


class JobIdTaken(InvalidJob):
    """A job's ``id`` is already another job's: a job belongs to its owner for life, so an
    existing id is never enqueued again (HTTP 409, CLI exit 73)."""

    exit_code = 73  # EX_CANTCREAT
    http_status = 409

    def __init__(self, job_id: str, index: int | None = None, first: int | None = None) -> None:
        self.job_id = job_id
        message = (
            f"job id {job_id} repeats the id of job {first} of this call"
            if first is not None
            else f"job id {job_id} already exists; a job id is never reused"
        )
        super().__init__([FieldError(field="id", message=message)], index)


class JobIdsTaken(InvalidJobs):
    """Some jobs of a call name ids that are taken (``errors``: one :class:`JobIdTaken` each);
    nothing of the call was enqueued."""

    exit_code = 73  # EX_CANTCREAT
    http_status = 409
    errors: list[JobIdTaken]  # type: ignore[assignment]

    @property
    def job_ids(self) -> list[str]:
        """The taken ids, in the order of the call."""
        return [e.job_id for e in self.errors]


class EnqueueFailed(MaildispatchError, RuntimeError):
    """Redis or the broker failed partway through a call, past the retry bound.

    ``ids`` follows the call's jobs: the job's id when it was enqueued (published, scheduled, or
    an idempotency key's earlier job), None when it was not (its state undone). Jobs enqueued are
    delivered; sending the others again is safe (same ids or idempotency keys included).
    """

    exit_code = 69  # EX_UNAVAILABLE
    http_status = 503

    def __init__(self, ids: Sequence[uuid.UUID | None], not_enqueued: Sequence[uuid.UUID]) -> None:
        self.ids = list(ids)
        self.enqueued = [i for i in self.ids if i is not None]
        self.not_enqueued = list(not_enqueued)
        shown = ", ".join(str(i) for i in self.enqueued[:10])
        more = f" (+{len(self.enqueued) - 10} more)" if len(self.enqueued) > 10 else ""
        super().__init__(
            f"enqueue failed partway: {len(self.enqueued)} job(s) enqueued [{shown}{more}], "
            f"{len(self.not_enqueued)} not enqueued"
        )


class IdempotencyInProgress(MaildispatchError, RuntimeError):
    """Another call is enqueueing jobs with the same idempotency keys and has not finished
    (published them, or failed and released the keys) within ``idempotency_wait``. Nothing of
    this call was enqueued; try again shortly."""

    exit_code = 75  # EX_TEMPFAIL: try again
    http_status = 409

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        shown = ", ".join(repr(k) for k in keys[:5])
        super().__init__(
            f"idempotency key(s) {shown} are being enqueued by another call; nothing was "
            "enqueued, try again shortly"
        )
