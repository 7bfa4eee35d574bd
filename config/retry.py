"""The retry policy table: how long to wait after a transient failure, and when to give up.

One function, :func:`next_retry`, reads it; tasks never decide retry timing themselves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from config.settings import Settings

JITTER = 0.2  # +-20 %: spreads a burst of 4xx answers so the retries do not arrive together


@dataclass(frozen=True)
class RetryPolicy:
    """Delays between attempts (the last one repeats) and the age after which a job expires."""

    delays: tuple[float, ...]
    give_up_after: float


def settings_policy(settings: Settings, channel: str) -> RetryPolicy:
    """A channel's policy from ``MAILDISPATCH_<CHANNEL>_RETRY_DELAYS`` / ``_GIVE_UP_AFTER``."""
    return RetryPolicy(
        getattr(settings, f"{channel}_retry_delays"),
        getattr(settings, f"{channel}_give_up_after"),
    )


def next_retry(
    policy: RetryPolicy,
    attempt: int,
    age: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None when the job should expire.

    ``attempt`` counts attempts made so far (1 after the first), ``age`` is seconds since the job
    was enqueued, ``retry_after`` is a delay the server asked for ("try again in N seconds").
    """
    if not policy.delays:
        return None
    base = policy.delays[min(attempt, len(policy.delays)) - 1]
    delay = base * (1 + (rng or random).uniform(-JITTER, JITTER))
    if retry_after is not None:
        delay = max(delay, retry_after)
    if age + delay > policy.give_up_after:
        return None
    return delay


#: a batch that an infrastructure error crashed (Redis or the database away) is run again after a
#: backoff doubling from 1 s up to this many seconds (worker/consume/stream.py, worker/tasks.py)
INFRA_RETRY_MAX_DELAY = 30.0
