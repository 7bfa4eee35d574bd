"""A job's states, as its Redis hash (``keys.job(id)``, field ``state``) and its status show them.

queued ──► sending ──► sent | failed | bounced | suppressed
  │           └──► retrying / deferred ──► sending ...     (the schedule, worker/jobs/)
  ├──► scheduled (send_at in the future) ──► sending
  └──► cancelled (before sending) · withdrawn (an enqueue that failed: never published)

The Lua scripts (``lua/*.lua`` beside producers/ and worker/jobs/) write and compare these same
strings; tests/unit/test_lua.py checks that every state a script names is one of them.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    RETRYING = "retrying"
    DEFERRED = "deferred"
    SENT = "sent"
    FAILED = "failed"
    BOUNCED = "bounced"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    WITHDRAWN = "withdrawn"


#: states a job never leaves (a claim answers ``done``)
FINAL: frozenset[JobState] = frozenset(
    {
        JobState.SENT,
        JobState.FAILED,
        JobState.BOUNCED,
        JobState.SUPPRESSED,
        JobState.CANCELLED,
        JobState.WITHDRAWN,
    }
)
#: states waiting in the schedule for their time (``next_at``)
WAITING: frozenset[JobState] = frozenset({JobState.RETRYING, JobState.SCHEDULED, JobState.DEFERRED})
