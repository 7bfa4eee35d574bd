"""Every Redis key maildispatch uses, in one place."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

PREFIX = "md:"

#: Job state is split into this many shards. A job's keys (its hash, its payload) and the
#: shard's schedule and event stream carry the shard's hash tag, so that every script about a
#: job touches one Redis Cluster slot; on a single Redis the tags change nothing.
SHARDS = 16


def _tag_in(part: int) -> str:
    """A short hash tag whose slot lies in the ``part``-th equal share of the slots: shards
    spread evenly over a cluster's masters, which are given contiguous slot ranges."""
    width = REDIS_CLUSTER_HASH_SLOTS // SHARDS
    n = 0
    while key_slot(f"{part}.{n}".encode()) // width != part:
        n += 1
    return f"{part}.{n}"


#: each shard's hash tag, braces included
TAGS: tuple[str, ...] = tuple("{" + _tag_in(i) + "}" for i in range(SHARDS))


def shard(job_id: str) -> int:
    """The shard a job's state lives in."""
    return zlib.crc32(job_id.encode()) % SHARDS


def shard_of_key(name: str) -> int:
    """The shard of a key this module named (by its hash tag)."""
    return TAGS.index(name[len(PREFIX) : name.index("}") + 1])


def per_shard(job_ids: Iterable[str]) -> dict[int, list[str]]:
    """Job ids grouped by shard, in their order (always: unlike config/redisconn.by_shard,
    for calls whose keys include a shard's own, its schedule or its stream)."""
    groups: dict[int, list[str]] = {}
    for job_id in job_ids:
        groups.setdefault(shard(job_id), []).append(job_id)
    return groups


#: hash per job: state, owner, channel, attempts, timestamps, last error, provider reply
def job(job_id: str) -> str:
    """The state hash of one job."""
    return f"{PREFIX}{TAGS[shard(job_id)]}:job:{job_id}"


def idempotency(owner: str, key: str) -> str:
    """Maps (owner, idempotency key) to the job id that key first created.

    The owner is length-prefixed, so that no two (owner, key) pairs share a name: owner ``a``
    with key ``x:k`` is ``idem:1:a:x:k``, owner ``a:x`` with key ``k`` is ``idem:3:a:x:k``.
    In the shard of the name (scripts claim many keys at once, one call per shard on a cluster).
    """
    name = f"{len(owner)}:{owner}:{key}"
    return f"{PREFIX}{TAGS[shard(name)]}:idem:{name}"


def payload(job_id: str) -> str:
    """The job's JSON while it waits in the schedule (a retry or a future ``send_at``)."""
    return f"{PREFIX}{TAGS[shard(job_id)]}:payload:{job_id}"


def events(n: int) -> str:
    """A shard's stream of its jobs' events (config/events.py): field ``o`` the owner, ``d``
    the event's JSON."""
    return f"{PREFIX}{TAGS[n]}:events"


def events_of(job_id: str) -> str:
    """The stream a job's events are written to."""
    return events(shard(job_id))


#: every shard's event stream
EVENTS: tuple[str, ...] = tuple(events(n) for n in range(SHARDS))
#: webhooks (worker/webhooks/outbox.py): the stream's consumer group; per lane ("endpoint:n")
#: a list of event JSON in order; the set of lanes holding events; lanes waiting for a retry,
#: by the time it is due; a lane's consecutive failures; an endpoint's first failure time
WEBHOOK_GROUP = "webhooks"
#: the message history's consumer group of the stream (worker/history/record.py)
HISTORY_GROUP = "history"
#: the history's writers: holder -> when it was last seen (ms); they split the shards
HISTORY_WRITERS = f"{PREFIX}history:writers"


def history_writer(n: int) -> str:
    """The lease of the process writing the history from a shard's event stream."""
    return f"{PREFIX}{TAGS[n]}:history:writer"


#: (every webhook key has the hash tag ``{wh}``: a lane's delivery updates several at once)
WEBHOOK_LANES = f"{PREFIX}{{wh}}:lanes"
WEBHOOK_DUE = f"{PREFIX}{{wh}}:due"
WEBHOOK_ATTEMPTS = f"{PREFIX}{{wh}}:attempts"
WEBHOOK_FAILING = f"{PREFIX}{{wh}}:failing"


def webhook_lane(lane: str) -> str:
    """The events waiting in one lane of an endpoint, oldest first."""
    return f"{PREFIX}{{wh}}:lane:{lane}"


def webhook_lease(lane: str) -> str:
    """Held by the task delivering a lane: one at a time, so a lane stays in order."""
    return f"{PREFIX}{{wh}}:lease:{lane}"


def schedule(n: int) -> str:
    """A shard's sorted set of job ids by the time they are due to be published again."""
    return f"{PREFIX}{TAGS[n]}:schedule"


def schedule_of(job_id: str) -> str:
    """The schedule a job waits in."""
    return schedule(shard(job_id))


#: every shard's schedule
SCHEDULES: tuple[str, ...] = tuple(schedule(n) for n in range(SHARDS))
#: hash owner -> preferred channel, mirrored from the accounts store for producers
PREFERRED_CHANNEL = f"{PREFIX}preferred-channel"
#: hash of counters (poison messages, deferrals, ...) for metrics
COUNTERS = f"{PREFIX}counters"
#: hash "channel:outcome" -> deliveries, bumped by workers (worker/observe/metrics.py), read by /metrics
DELIVERIES = f"{PREFIX}metrics:deliveries"
#: hash "channel:le" -> deliveries accepted within that many seconds of enqueueing (one bucket
#: per observation, not cumulative), plus "channel:sum" and "channel:count"
LATENCY = f"{PREFIX}metrics:latency"


def rate(scope: str) -> str:
    """A fleet-wide rate-limit window (all in one slot: a job takes its place in the windows
    of every scope that limits it at once)."""
    return f"{PREFIX}{{rate}}:{scope}"


#: sorted set of batches being delivered, by the time their holder's lease runs out (renewed
#: while the worker process lives); the scheduler's reaper republishes the jobs of a dead one.
#: It and the batches' keys share one hash tag (their scripts touch both).
INFLIGHT = f"{PREFIX}{{inflight}}"


def batch(batch_id: str) -> str:
    """The job JSON of one in-flight batch (while a worker process delivers it)."""
    return f"{INFLIGHT}:batch:{batch_id}"


def reaping(batch_id: str) -> str:
    """A short lock so that two schedulers do not republish the same dead batch at once."""
    return f"{INFLIGHT}:reaping:{batch_id}"


#: bounce reports that could not be ingested (time limit, parser crash, IMAP fetch failure):
#: hash id -> JSON summary, hash id -> JSON task payload, sorted set of ids by time
#: (the dead letters and the runs in progress share the hash tag ``{bounces}``: each is written
#: in one transaction)
BOUNCE_DEAD_META = f"{PREFIX}{{bounces}}:dead:meta"
BOUNCE_DEAD_WIRE = f"{PREFIX}{{bounces}}:dead:wire"
BOUNCE_DEAD_INDEX = f"{PREFIX}{{bounces}}:dead"
#: ingests in progress: hash task id -> JSON {wire, attempts}; sorted set of task ids by the
#: time past which a run still there was killed (hard time limit, dead worker)
BOUNCE_INGESTING = f"{PREFIX}{{bounces}}:ingesting"
BOUNCE_INGESTING_DEADLINES = f"{PREFIX}{{bounces}}:ingesting:deadlines"
#: held by the scheduler that runs the retention purge, for one purge interval: one per fleet
PURGE_LOCK = f"{PREFIX}purge-lock"
#: IMAP messages whose fetch broke the connection: hash "<mailbox>|<uidvalidity>|<uid>" -> count
#: (and "...#size" -> the message's RFC822.SIZE, when it was read)
BOUNCE_POLL_FAILURES = f"{PREFIX}bounces:poll:failures"


def oauth_state(state: str) -> str:
    """An account connection in progress (worker/accounts/connect.py), by a digest of its
    ``state``: the owner, where to return, the PKCE verifier; kept 10 minutes, taken once."""
    return f"{PREFIX}oauth:state:{hashlib.sha256(state.encode()).hexdigest()}"


#: who may send as what on MSC when MAILDISPATCH_REQUIRE_VERIFIED_IDENTITIES is on: a set of
#: :func:`sender` members, rewritten from the store by the scheduler (worker/domains/)
SENDERS = f"{PREFIX}senders"


def sender(owner: str, what: str) -> str:
    """A member of :data:`SENDERS`: ``what`` is ``@domain`` (a verified domain) or an address
    (a confirmed one), lowercase; the owner length-prefixed, as in :func:`idempotency`."""
    return f"{len(owner)}:{owner}:{what.lower()}"


#: the hosts of the fleet: host -> when a worker or scheduler there was last seen (worker/store/
#: hosts.py: a SQLite store refuses a second host)
FLEET_HOSTS = f"{PREFIX}hosts"
