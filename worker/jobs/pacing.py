"""Fleet-wide pacing: limits that hold across every worker process and host, counted in Redis.

Scopes: a connected Gmail account (``MAILDISPATCH_GMAIL_LIMITS``, default 2,000 per rolling 24 h
and 150 per minute), a custom SMTP server (``MAILDISPATCH_SMTP_LIMITS`` for every server,
``MAILDISPATCH_SMTP_SERVER_LIMITS`` for one host) and an MSC destination domain
(``MAILDISPATCH_MSC_DOMAIN_LIMITS="gmail.com=50/s,yahoo.com=20/s"``). Celery's ``rate_limit`` is
per worker process and does not hold for a fleet.

Each (scope, rate) is a sliding window of buckets in one Redis hash, checked and counted for all
the scopes of a job at once by one Lua script. A bucket is counted until every message in it is
older than the window, so the limit is never exceeded (at the cost of up to one bucket of
headroom: 100 ms of a per-second rate, 1/60 of a longer window). A job over
a limit is not failed: it is deferred through the schedule (state ``deferred``, counted in
``md:counters``) to a slot when capacity returns; deferred jobs get successive slots spaced by
``window / count`` so they come back at the sustainable rate instead of all at once. A deferral
uses neither an attempt nor the give-up budget. With no limit configured for a job's scopes there
is no Redis call at all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog

from config import keys
from config.limits import Rate
from config.lua import lua_script
from config.redisconn import AsyncState
from config.settings import Settings
from producers.job import SendJob
from worker.channels.base import Scope
from worker.channels.registry import pacing_for

log = structlog.get_logger("maildispatch.ratelimit")

_ACQUIRE = lua_script("worker.jobs", "acquire")


def buckets_for(rate: Rate) -> int:
    """Buckets per window: 100 ms for per-second rates, 1/60 of longer windows."""
    return 10 if rate.window <= 10 else 60


class Pacing:
    """The fleet-wide limits of one channel, checked before each send."""

    def __init__(self, settings: Settings, channel: str, client: AsyncState) -> None:
        self.channel = channel
        self.redis = client
        #: the channel's own rule (its class's ``pacing``, worker/channels/): None, not paced
        self.rule = pacing_for(settings, channel)
        self.enabled = self.rule is not None
        self._acquire = client.register_script(_ACQUIRE)

    def scopes(self, job: SendJob, account: Any, recipients: Sequence[str]) -> list[Scope]:
        """The limited scopes this send counts against (empty: nothing to check)."""
        return self.rule(job, account, recipients) if self.rule is not None else []

    async def acquire(self, scopes: Sequence[Scope], now: float | None = None) -> float:
        """Count one message against every scope, or return when to try again (0: go)."""
        names: list[str] = []
        args: list[float | int] = [time.time() if now is None else now]
        for scope, rates in scopes:
            for rate in rates:
                names.append(keys.rate(f"{scope}:{rate.window:g}"))
                args += [rate.count, rate.window, buckets_for(rate)]
        reply = await self._acquire(keys=names, args=args)
        return float(reply.decode() if isinstance(reply, bytes) else reply)

    async def over_limit(
        self, job: SendJob, account: Any, recipients: Sequence[str]
    ) -> tuple[float, str] | None:
        """None when the send may go now; else (when to try again, the limiting scope)."""
        if not self.enabled:
            return None
        scopes = self.scopes(job, account, recipients)
        if not scopes:
            return None
        due = await self.acquire(scopes)
        if due <= 0:
            return None
        return due, ",".join(s for s, _ in scopes)
