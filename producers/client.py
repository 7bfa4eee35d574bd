"""Validate and enqueue ``SendJob``s: ``send``, ``send_many`` and the ``Dispatcher`` behind them.

A job accepted here is recorded as ``queued`` in Redis and published inside a delivery batch
(DESIGN §4). A batch task carries 1..N jobs of one channel (and one owner for gmail/smtp).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

import orjson
import redis
import structlog
from celery import Celery, signals
from hiredis import pack_command
from pydantic import TypeAdapter, ValidationError

from config import fastjson, keys
from config.celery import (
    DELIVER_TASK,
    PRIORITY_BULK,
    PRIORITY_URGENT,
    QUEUE,
    celery_config,
    use_orjson,
)
from config.settings import Settings, get_settings
from producers.enqueue import (
    QUEUED,
    Backoff,
    QueuedStates,
    is_transient,
    retrying,
    ttl_until_due,
    undo,
)
from producers.errors import EnqueueFailed, InvalidJobs, JobIdsTaken, JobIdTaken
from producers.job import Channel, FieldError, InvalidJob, SendJob, limits, parse_job
from producers.publishing import NotPublished, Task, can_capture, captured, publish_all

__all__ = [
    "Dispatcher",
    "EnqueueFailed",
    "IdempotencyInProgress",
    "InvalidJobs",
    "JobIdTaken",
    "JobIdsTaken",
    "send",
    "send_many",
]

log = structlog.get_logger("maildispatch.producer")

#: a chunk of jobs given as dicts is validated in one call into pydantic (~5% of send_many's
#: instructions per job less than a call per job)
_JOBS = TypeAdapter(list[SendJob])

JobInput = SendJob | Mapping[str, Any] | str | bytes
Progress = Callable[[int], None]


class IdempotencyInProgress(RuntimeError):
    """Another call is enqueueing jobs with the same idempotency keys and has not finished
    (published them, or failed and released the keys) within ``idempotency_wait``. Nothing of
    this call was enqueued; try again shortly."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        shown = ", ".join(repr(k) for k in keys[:5])
        super().__init__(
            f"idempotency key(s) {shown} are being enqueued by another call; nothing was "
            "enqueued, try again shortly"
        )


def make_celery(settings: Settings, name: str = "maildispatch") -> Celery:
    """A Celery app configured for maildispatch; the worker builds its own from the same config."""
    use_orjson()
    app = Celery(name, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


#: task messages written to Redis per round trip (each ~400 KB with 200 jobs of ~2 KB). Not
#: more: sixteen held at once (~7 MB, in several copies each) were often handed back to the OS
#: when freed together and faulted in again on the next flush, ~6 µs per job on a VM.
PUBLISH_PIPELINE = 4

# KEYS: job hash, schedule zset, the job's scheduled payload, the fleet's counters.
# ARGV: now, job id -> the job's state after the call ('cancelled' when it is, now or before;
# '' when unknown). Counted once per job, as the event jobs_cancelled (/metrics).
_CANCEL = """
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'queued' or st == 'retrying' or st == 'scheduled' or st == 'deferred' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'updated_at', ARGV[1])
  redis.call('HDEL', KEYS[1], 'next_at')
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[3])
  redis.call('HINCRBY', KEYS[4], 'jobs_cancelled', 1)
  return 'cancelled'
end
return st or ''
"""


#: An idempotency key is first claimed as pending ("p:<job id>") and confirmed ("<job id>", for
#: the job TTL) once its job is published: a concurrent call with the same key never answers
#: with the id of a job whose publish may still fail. It waits up to
#: MAILDISPATCH_IDEMPOTENCY_WAIT for the other call to confirm or release the key. A pending
#: claim lapses after PENDING_TTL seconds, so that a producer that died mid-call does not hold
#: its keys for the whole job TTL (a send_many call must finish within that time).
PENDING_TTL = 600
_PENDING = "p:"

# KEYS: idempotency keys. ARGV: pending ttl, then the pending value ("p:<id>") of each key ->
# the value each key holds now: its own when this call set it, '' when it lapsed meanwhile
_CLAIM_KEYS = """
local out = {}
for i, key in ipairs(KEYS) do
  local mine = ARGV[i + 1]
  if redis.call('SET', key, mine, 'NX', 'EX', ARGV[1]) then
    out[i] = mine
  else
    out[i] = redis.call('GET', key) or ''
  end
end
return out
"""

# KEYS: idempotency keys. ARGV: the job id and a ttl for each key -> every key still pending
# for that job is confirmed (set to the id, with its ttl), or released (deleted) when ttl is 0
_SETTLE = """
for i, key in ipairs(KEYS) do
  local id = ARGV[2 * i - 1]
  local ttl = tonumber(ARGV[2 * i])
  if redis.call('GET', key) == 'p:' .. id then
    if ttl > 0 then redis.call('SET', key, id, 'EX', ttl) else redis.call('DEL', key) end
  end
end
return #KEYS
"""


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a call builds many jobs.

    Each collection pass rescans every job built so far: ~25% of ``send_many``'s time at 50,000
    jobs (docs/performance.md). Nothing it builds is cyclic garbage; collection resumes after.
    """
    if not gc.isenabled():  # already paused (by the caller or a concurrent call)
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


#: jobs validated and recorded as queued per step of send_many (and per script call)
STATE_CHUNK = 1000


def _batch_key(channel: str, owner: str) -> tuple[str, str]:
    """The jobs one batch task may carry: one channel, and one owner for gmail and smtp."""
    return channel, owner if channel != Channel.MSC else ""


def _box_count(job: SendJob) -> int:
    """How many mailboxes a job names, a repeated one counted each time."""
    return len(job.to) + len(job.cc) + len(job.bcc)


def _recipient_count(job: SendJob) -> int:
    """``len(job.recipients)``, without building the list in the common case of one mailbox."""
    boxes = _box_count(job)
    return boxes if boxes == 1 else len(job.recipients)


_DELIVER_NAMES = {name: channel for channel, name in DELIVER_TASK.items()}


@signals.before_task_publish.connect
def _hide_arguments(
    sender: str | None = None, body: Any = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    """Every publish of a delivery task (first send, retry, republish) shows ids only."""
    if headers is None or sender not in _DELIVER_NAMES:
        return
    args = body[0] if isinstance(body, tuple | list) and body else ()
    jobs = args[0] if args and isinstance(args[0], list | orjson.Fragment) else []
    headers["kwargsrepr"] = "{}"
    if isinstance(jobs, orjson.Fragment):
        return  # encoded by Dispatcher, which names the jobs itself (and a Fragment's repr is bare)
    headers["argsrepr"] = task_argsrepr(
        [j for j in jobs if isinstance(j, dict)], _DELIVER_NAMES[sender]
    )


def task_argsrepr(jobs: Sequence[Mapping[str, Any]], channel: str) -> str:
    """What Flower and logs show of a batch: ids, owners, channel and count, never content."""
    return _argsrepr(
        [j.get("id") for j in jobs[:3]], {j.get("owner") for j in jobs}, channel, len(jobs)
    )


def _argsrepr(first_ids: Sequence[Any], owners: Iterable[Any], channel: str, count: int) -> str:
    ids = [str(i) for i in first_ids]
    shown = sorted({str(o) for o in owners})
    more = f" +{count - 3} more" if count > 3 else ""
    return f"jobs={ids}{more} owners={shown[:3]} channel={channel} count={count}"


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most ``size`` items."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


_SET_BY_WIRE = {"id", "channel"}


def job_wire(job: SendJob, job_id: str | None = None) -> dict[str, Any]:
    """The JSON form of a job as it travels on the queue (defaults left out to keep it small).

    ``job_id`` is ``str(job.id)`` when the caller has it already.
    """
    # id and channel are set below: excluded from the dump, whose comparison with the defaults
    # would otherwise draw a fresh uuid4 for every job (a third of the dump's cost)
    wire = job.model_dump(mode="json", exclude_defaults=True, exclude=_SET_BY_WIRE)
    wire["id"] = job_id or str(job.id)
    wire["channel"] = str(job.channel)
    return wire


#: a job on its way to the queue: (id, owner, the data as given or None, the validated job or
#: None); its queue form is made when its batch is published (see _encode)
Entry = tuple[str, str, "dict[str, Any] | None", "SendJob | None"]


def _encode(entries: Sequence[Entry], channel: str) -> orjson.Fragment:
    """The JSON array of a batch's jobs, in their queue form.

    A job given as a dict goes as the caller gave it, with its id and channel: a worker validates
    it into the same SendJob as this producer did (one model, one set of rules), so the
    validated job need not be dumped (a sixth of ``send_many``'s cost per job). Data that is not
    JSON as given (a Mailbox object, a Decimal in metadata...) and SendJob objects go as the
    validated job's dump. Made batch by batch, as it is published: no encoded form of every job
    is held at once.
    """
    wires = [_wire(entry, channel) for entry in entries]
    try:
        return orjson.Fragment(orjson.dumps(wires))
    except TypeError:  # orjson.JSONEncodeError: some job's data is not JSON as given
        pass
    for n, (job_id, _, _, job) in enumerate(entries):
        if job is not None:
            try:
                orjson.dumps(wires[n])
            except TypeError:
                wires[n] = job_wire(job, job_id)
    return orjson.Fragment(fastjson.dumps(wires))


def _wire(entry: Entry, channel: str) -> dict[str, Any]:
    job_id, _, given, job = entry
    if given is not None:
        return {**given, "id": job_id, "channel": channel}
    assert job is not None  # an entry has its data or its job
    return job_wire(job, job_id)


def _state_fields(job: SendJob, ttl: float, now: float) -> tuple[Any, ...]:
    """What a job's queued state records (see producers/enqueue.py QUEUED), with its TTL: after
    its ``send_at`` when it has one, so that scheduled mail outlives the wait."""
    due = job.send_at.timestamp() if job.send_at else None
    return (
        job.owner,
        str(job.channel),
        job.subject[:200],
        str(job.identity),
        _recipient_count(job),
        ttl_until_due(ttl, due, now),
    )


class Dispatcher:
    """Validates jobs and publishes them to the per-channel queues. Thread-safe; reuse one."""

    def __init__(self, settings: Settings | None = None, celery_app: Celery | None = None) -> None:
        self.settings = settings or get_settings()
        self.settings.require_secret_key()
        self.celery = celery_app or make_celery(self.settings, "maildispatch-producer")
        self.redis = redis.Redis.from_url(self.settings.state_redis_url)
        self._queued = self.redis.register_script(QUEUED)
        # the broker is the state's Redis (the default): a call whose jobs make one task message
        # writes states and message in one script (see _record_with_task)
        self._one_script = self.settings.broker_url == self.settings.state_redis_url

    # -- validation ---------------------------------------------------------------------------
    def validate(self, data: JobInput, index: int | None = None) -> SendJob:
        """One job, checked against the contract and this deployment's limits."""
        most = self.settings.max_recipients
        if type(data) is dict:  # the common case: no Mapping (ABC) check, no copy
            job = parse_job(data, index, max_recipients=most)
        elif isinstance(data, SendJob):
            job = data
        else:
            job = parse_job(_as_json_input(data), index, max_recipients=most)
        self._check_limits(job, index)
        return job

    def _check_limits(self, job: SendJob, index: int | None) -> None:
        """This deployment's limits on message size and recipients."""
        limit = self.settings.max_message_bytes
        # a character is at most 4 bytes of UTF-8: only a body that could be too large is measured
        body = len(job.text or "") + len(job.html or "") + job.header_size()
        if (job.attachments or 4 * body + 2048 > limit) and job.estimated_size() > limit:
            raise InvalidJob(
                [
                    FieldError(
                        field="attachments" if job.attachments else "text",
                        message=f"message larger than {self.settings.max_message_bytes} bytes",
                    )
                ],
                index,
            )
        if _box_count(job) > self.settings.max_recipients and (
            len(job.recipients) > self.settings.max_recipients
        ):
            raise InvalidJob(
                [
                    FieldError(
                        field="to", message=f"more than {self.settings.max_recipients} recipients"
                    )
                ],
                index,
            )

    def validate_all(self, items: Iterable[JobInput]) -> list[SendJob]:
        """Every job valid, or :class:`InvalidJobs` naming each bad one (by index) and field."""
        given = items if isinstance(items, list) else list(items)
        errors: list[InvalidJob] = []
        jobs = [
            job
            for start in range(0, len(given), STATE_CHUNK)
            for job in self._validate_chunk(given, start, errors)
        ]
        if errors:
            raise InvalidJobs(errors)
        return jobs

    # -- enqueueing ---------------------------------------------------------------------------
    def send(self, job: JobInput) -> uuid.UUID:
        """Validate and enqueue one job at once (a batch of one); returns its id.

        An invalid job raises :class:`InvalidJob`, naming every invalid field.
        """
        try:
            return self.send_many([job])[0]
        except InvalidJobs as exc:
            raise exc.errors[0] from None

    def send_many(
        self, items: Iterable[JobInput], progress: Progress | None = None
    ) -> list[uuid.UUID]:
        """Validate every job first, then enqueue them in batches; returns the ids in order.

        A job whose idempotency key was seen before is not enqueued again: its first id is
        returned in its place.
        """
        # the work runs in its own frame: everything it built is freed when it returns, before
        # collection resumes (a collection then would scan every job and wire form still alive)
        with _gc_paused():
            return self._send_many(items, progress)

    def _send_many(self, items: Iterable[JobInput], progress: Progress | None) -> list[uuid.UUID]:
        given = items if isinstance(items, list) else list(items)
        now = time.time()
        ttl = self.settings.job_ttl
        # one bound for the whole call: Redis' and the broker's transient errors are retried
        # until it is spent (safe: states carry the call's nonce, keys and ids are the same)
        backoff = Backoff(self.settings.enqueue_retry_for)
        ids: list[uuid.UUID] = []
        errors: list[InvalidJob] = []
        taken: list[JobIdTaken] = []
        # (position in `given`, job, its id as text) of every job to enqueue
        accepted: list[tuple[int, SendJob, str]] = []
        first_at: dict[str, int] = {}  # each new job's id -> its position: no id twice a call
        claimed: set[str] = set()  # ids whose idempotency keys this call claimed
        states = QueuedStates(self.redis, now, backoff)
        try:
            # Chunk by chunk, so that Redis records the queued states of one chunk (a third of
            # the time it takes to validate it) while the next is validated; every state is
            # confirmed before the first job is published. After an invalid job, the rest is
            # only validated (every bad job is reported); then, or after a taken id, what was
            # recorded is undone.
            # A call of one chunk (a single send, a small batch) holds its states back: when its
            # jobs make one task message, states and message go in one script (one round trip)
            held: list[tuple[str, tuple[Any, ...]]] | None = (
                [] if len(given) <= STATE_CHUNK and self._one_script else None
            )
            for start in range(0, len(given), STATE_CHUNK):
                jobs = self._validate_chunk(given, start, errors)
                if errors:
                    continue
                jobs = self._resolve_channels(jobs, backoff)
                chunk_ids, fresh = self._claim_idempotency(jobs, claimed, backoff)
                ids += chunk_ids
                new = []
                for i in fresh:
                    job_id = str(jobs[i].id)
                    first = first_at.setdefault(job_id, start + i)
                    if first != start + i:
                        taken.append(JobIdTaken(job_id, start + i, first))
                    else:
                        new.append((start + i, jobs[i], job_id))
                accepted += new
                # recorded even after a repeated id, so that every taken id is named; undone
                chunk_states = [(i, _state_fields(j, ttl, now)) for _, j, i in new]
                if held is None:
                    states.send(chunk_states)
                else:
                    held += chunk_states
            later: list[SendJob] = []
            groups: dict[tuple[str, str], list[Entry]] = {}
            for i, job, job_id in accepted:
                if job.send_at and job.send_at.timestamp() > now:
                    later.append(job)
                    continue
                data = given[i]
                group = groups.setdefault(_batch_key(str(job.channel), job.owner), [])
                group.append((job_id, job.owner, data if type(data) is dict else None, job))
            # one job, as a service sends per user action: the urgent lane (config/celery.py)
            urgent = len(accepted) - len(later) == 1
            tasks = self._tasks(groups)
            elsewhere: list[str] | None = None
            if held and not (errors or taken or later) and len(tasks) == 1:
                elsewhere = self._record_with_task(
                    held, tasks[0], urgent, now, states.nonce, backoff
                )
                if elsewhere is None:  # the broker is not this Redis after all
                    states.send(held)
            elif held:
                states.send(held)
            published = elsewhere is not None
            if not published:
                elsewhere = states.confirm()  # ids that are other jobs' already
            if errors:
                raise InvalidJobs(errors)
            if taken or elsewhere:
                taken += [JobIdTaken(i, first_at[i]) for i in elsewhere or ()]
                raise JobIdsTaken(sorted(taken, key=lambda e: e.index or 0))
            if published:
                if progress:
                    progress(len(accepted))
            else:
                if later:
                    retrying(lambda: self._schedule(later, now), backoff)
                self._publish_groups(groups, progress, urgent=urgent, backoff=backoff)
        except NotPublished as exc:
            # some batches are on the queue: those jobs keep their state and are answered
            states.close()
            raise self._partly_enqueued(
                accepted, ids, exc.job_ids, states.nonce, now, claimed
            ) from exc.__cause__
        except BaseException:
            states.close()
            self._forget([job for _, job, _ in accepted], states.nonce)
            raise
        if claimed:  # published, so accepted: a key not confirmed lapses after PENDING_TTL
            with contextlib.suppress(redis.RedisError):
                self._settle([j for _, j, _ in accepted], now, backoff)
        return ids

    def _partly_enqueued(
        self,
        accepted: Sequence[tuple[int, SendJob, str]],
        ids: Sequence[uuid.UUID],
        failed: set[str],
        nonce: str,
        now: float,
        claimed: set[str],
    ) -> EnqueueFailed:
        """Publishing failed past the retry bound, maybe after some batches went out: the jobs
        not published are withdrawn (their keys released); the error names which were
        enqueued."""
        backoff = Backoff(self.settings.enqueue_retry_for)
        lost = [j for _, j, i in accepted if i in failed]
        kept = [j for _, j, i in accepted if i not in failed]
        try:
            # `withdrawn`, not deleted: a copy of the failed publish may have reached the queue
            undo(self.redis, [str(j.id) for j in lost], nonce, int(self.settings.job_ttl), backoff)
            self._settle(lost, now, backoff, release=True)
            if claimed:
                self._settle(kept, now, backoff)
        except redis.RedisError:
            log.exception("enqueue_undo_failed", not_enqueued=len(lost))
        return EnqueueFailed([None if str(i) in failed else i for i in ids], [j.id for j in lost])

    def _validate_chunk(
        self, given: Sequence[JobInput], start: int, errors: list[InvalidJob]
    ) -> list[SendJob]:
        chunk = given[start : start + STATE_CHUNK]
        parsed: list[SendJob] | None = None
        if all(type(item) is dict for item in chunk):
            with contextlib.suppress(ValidationError):  # then job by job, naming each bad one
                parsed = _JOBS.validate_python(chunk, context=limits(self.settings.max_recipients))
        jobs: list[SendJob] = []
        for index in range(start, start + len(chunk)):
            try:
                if parsed is None:
                    jobs.append(self.validate(given[index], index))
                else:
                    job = parsed[index - start]
                    self._check_limits(job, index)
                    jobs.append(job)
            except InvalidJob as exc:
                errors.append(exc)
        return jobs

    def publish(self, wires: Sequence[dict[str, Any]], progress: Progress | None = None) -> None:
        """Publish jobs (already validated, in wire form) as batches per channel (and owner)."""
        groups: dict[tuple[str, str], list[Entry]] = {}
        for wire in wires:
            owner = wire["owner"]
            key = _batch_key(wire["channel"], owner)
            groups.setdefault(key, []).append((wire["id"], owner, wire, None))
        try:
            self._publish_groups(groups, progress)
        except NotPublished as exc:  # the scheduler's or reaper's next round publishes them
            raise exc.__cause__ or exc from None

    def _tasks(self, groups: Mapping[tuple[str, str], list[Entry]]) -> list[Task]:
        """Each group's jobs as batch tasks (channel, entries) of at most batch_size jobs."""
        size = self.settings.batch_size
        return [(ch, chunk) for (ch, _), group in groups.items() for chunk in batches(group, size)]

    def _publish_groups(
        self,
        groups: Mapping[tuple[str, str], list[Entry]],
        progress: Progress | None,
        urgent: bool = False,
        backoff: Backoff | None = None,
    ) -> None:
        """Each group's jobs (id, owner, queue form) as batch tasks of at most batch_size jobs;
        transient broker errors retried, else :class:`NotPublished` (producers/publishing.py)."""
        backoff = backoff or Backoff(self.settings.enqueue_retry_for)
        send = functools.partial(self._send_task, PRIORITY_URGENT if urgent else PRIORITY_BULK)
        publish_all(self.celery, self._tasks(groups), send, progress, backoff, PUBLISH_PIPELINE)

    def _send_task(self, priority: int, producer: Any, channel: str, chunk: Sequence[Any]) -> None:
        """One batch task through ``producer``, straight to the channel's queue through the
        default exchange (the queue's name is the routing key): on Redis, kombu would otherwise
        read the exchange's bindings back with one round trip per message."""
        queue = QUEUE[channel]
        self.celery.send_task(
            DELIVER_TASK[channel],
            args=(_encode(chunk, channel),),
            queue=queue,
            exchange="",
            routing_key=queue,
            producer=producer,
            priority=priority,
            argsrepr=_argsrepr(
                [e[0] for e in chunk[:3]], {e[1] for e in chunk}, channel, len(chunk)
            ),
            kwargsrepr="{}",
        )

    def _record_with_task(
        self,
        states: Sequence[tuple[str, tuple[Any, ...]]],
        task: Task,
        urgent: bool,
        now: float,
        nonce: str,
        backoff: Backoff,
    ) -> list[str] | None:
        """The queued states of a call's jobs and the one task message carrying them, written
        in one script (QUEUED): one round trip, and never one without the other. Returns the
        ids that are other jobs' already (then nothing was written), or None where the broker
        is not this Redis (the caller records, then publishes)."""
        if not self._one_script:
            return None
        priority = PRIORITY_URGENT if urgent else PRIORITY_BULK
        with self.celery.producer_or_acquire() as producer:
            if not can_capture(producer):
                return None
            with captured(producer) as commands:
                self._send_task(priority, producer, *task)
        names = [keys.job(i) for i, _ in states]
        names += [c[1] for c in commands if c[0] == "lpush"]
        args: list[Any] = [repr(now), nonce, fastjson.dumps([f for _, f in states])]
        for name, *rest in commands:
            args += [name, len(rest), *rest]
        try:
            reply = retrying(lambda: self._queued(keys=names, args=args), backoff)
        except Exception as exc:
            if is_transient(exc):  # maybe written, maybe not: undone as a failed publish is
                raise NotPublished({i for i, _ in states}) from exc
            raise
        return [states[int(n) - 1][0] for n in reply or ()]

    def _resolve_channels(
        self, jobs: list[SendJob], backoff: Backoff | None = None
    ) -> list[SendJob]:
        owners = sorted({j.owner for j in jobs if j.channel is None})
        if not owners:
            return jobs
        backoff = backoff or Backoff(self.settings.enqueue_retry_for)
        prefs = retrying(lambda: self.redis.hmget(keys.PREFERRED_CHANNEL, owners), backoff)
        chosen = {
            o: Channel(_text(p)) if p else Channel.MSC for o, p in zip(owners, prefs, strict=True)
        }
        return [j if j.channel else j.model_copy(update={"channel": chosen[j.owner]}) for j in jobs]

    def _claim_idempotency(
        self, jobs: list[SendJob], claimed: set[str], backoff: Backoff
    ) -> tuple[list[uuid.UUID], list[int]]:
        """Every job's id (a repeated idempotency key's first id) and the positions of new jobs.

        A key claimed by this call (``claimed``, updated here) or confirmed by an earlier one
        gives its job's id; a key another call is still enqueueing is waited for (see
        ``idempotency_wait``): taken over if that call released it, or
        :class:`IdempotencyInProgress`.
        """
        first: dict[int, uuid.UUID] = {}  # position -> the id that answers it
        repeats: set[int] = set()  # positions answered with an earlier job's id
        waiting = [(n, j) for n, j in enumerate(jobs) if j.idempotency_key]
        deadline = time.monotonic() + self.settings.idempotency_wait
        while waiting:
            names = [keys.idempotency(j.owner, j.idempotency_key or "") for _, j in waiting]
            values = [PENDING_TTL, *[f"{_PENDING}{j.id}" for _, j in waiting]]
            # SET NX of this call's own value: a claim sent again finds it, which is its own
            replies = retrying(functools.partial(self._eval, _CLAIM_KEYS, names, values), backoff)
            busy = []
            for (n, j), stored in zip(waiting, replies, strict=True):
                value = _text(stored)
                job_id = value.removeprefix(_PENDING)
                if value == f"{_PENDING}{j.id}" and job_id not in claimed:
                    claimed.add(job_id)  # this call's claim: a new job
                elif not value or (value != job_id and job_id not in claimed):
                    busy.append((n, j))  # lapsed meanwhile, or another call has not published
                    continue
                else:  # confirmed by an earlier call (even with this very id), or this one's
                    repeats.add(n)
                first[n] = uuid.UUID(job_id)
            waiting = busy
            if waiting and time.monotonic() >= deadline:
                with contextlib.suppress(redis.RedisError):
                    mine = [j for n, j in enumerate(jobs) if n in first and n not in repeats]
                    self._settle(mine, 0.0, Backoff(0), release=True)
                raise IdempotencyInProgress([j.idempotency_key or "" for _, j in waiting])
            if waiting:
                time.sleep(0.02)
        if not first:
            return [j.id for j in jobs], list(range(len(jobs)))
        ids = [first.get(n, j.id) for n, j in enumerate(jobs)]
        fresh = [n for n in range(len(jobs)) if n not in repeats]
        return ids, fresh

    def _settle(
        self, jobs: Sequence[SendJob], now: float, backoff: Backoff, release: bool = False
    ) -> None:
        """Confirm the idempotency keys these jobs still hold pending, for as long as each job's
        state lives (its TTL after it is due), or release them."""
        keyed = [j for j in jobs if j.idempotency_key]
        ttl = self.settings.job_ttl
        for chunk in batches(keyed, STATE_CHUNK):
            names = [keys.idempotency(j.owner, j.idempotency_key or "") for j in chunk]
            args: list[Any] = []
            for j in chunk:
                due = j.send_at.timestamp() if j.send_at else None
                args += [str(j.id), 0 if release else ttl_until_due(ttl, due, now)]
            retrying(functools.partial(self._eval, _SETTLE, names, args), backoff)

    def _eval(self, script: str, names: Sequence[str], args: Sequence[Any]) -> Any:
        """EVAL, its arguments packed by hiredis (redis-py packs each in Python, ~1 µs apiece:
        as much as the rest of a claim of many idempotency keys)."""
        pool = self.redis.connection_pool
        conn: Any = pool.get_connection()
        try:
            conn.send_packed_command([pack_command(("EVAL", script, len(names), *names, *args))])
            return conn.read_response()
        except BaseException:
            conn.disconnect()  # a reply may be left unread: not reusable
            raise
        finally:
            pool.release(conn)

    def _schedule(self, jobs: list[SendJob], now: float) -> None:
        """Park jobs with a future ``send_at``: payload and state live until due plus the TTL."""
        pipe = self.redis.pipeline(transaction=True)
        for j in jobs:
            assert j.send_at is not None
            job_id = str(j.id)
            due = j.send_at.timestamp()
            ttl = ttl_until_due(self.settings.job_ttl, due, now)
            pipe.set(keys.payload(job_id), json.dumps(job_wire(j)), ex=ttl)
            pipe.hset(keys.job(job_id), mapping={"state": "scheduled", "next_at": due})
            pipe.expire(keys.job(job_id), ttl)
            pipe.zadd(keys.SCHEDULE, {job_id: due})
        pipe.execute()

    def _forget(self, jobs: list[SendJob], nonce: str) -> None:
        """Undo the bookkeeping of jobs that could not be enqueued: only what this call (its
        ``nonce``) recorded, never another job's state."""
        backoff = Backoff(self.settings.enqueue_retry_for)
        with contextlib.suppress(redis.RedisError):
            undo(self.redis, [str(j.id) for j in jobs], nonce, 0, backoff)
        with contextlib.suppress(redis.RedisError):
            self._settle(jobs, 0.0, backoff, release=True)  # their keys, where still this call's

    def cancel(self, job_id: uuid.UUID | str) -> str | None:
        """Cancel a job that has not been sent yet; returns its state after the call.

        ``"cancelled"`` when it is (now, or by an earlier call); the state that made it too late
        otherwise (``"sending"``: its SMTP transaction is under way; ``"sent"``, ``"failed"``...);
        None for an unknown job (or one whose state expired). A job waiting on the queue or in
        the schedule (a retry, a ``send_at``, a rate-limit deferral) is cancelled; the worker
        that later takes its task skips it. Recipients a partly delivered job reached already
        keep what they got.
        """
        job_id = str(job_id)
        names = (keys.job(job_id), keys.SCHEDULE, keys.payload(job_id), keys.COUNTERS)
        state = self.redis.eval(_CANCEL, len(names), *names, time.time(), job_id)
        return _text(state) or None

    def status(self, job_id: uuid.UUID | str) -> dict[str, str] | None:
        """The job's state hash from Redis (None when unknown or expired)."""
        raw = self.redis.hgetall(keys.job(str(job_id)))
        if not raw:
            return None
        return {_text(k): _text(v) for k, v in raw.items()}

    def close(self) -> None:
        """Release the broker and Redis connections."""
        self.redis.close()
        self.celery.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _as_json_input(data: Mapping[str, Any] | str | bytes) -> dict[str, Any] | str | bytes:
    return dict(data) if isinstance(data, Mapping) else data


_default: Dispatcher | None = None


def _dispatcher() -> Dispatcher:
    global _default
    if _default is None:
        _default = Dispatcher()
    return _default


def send(job: JobInput) -> uuid.UUID:
    """Validate and enqueue one job with the process-wide settings; returns its id."""
    return _dispatcher().send(job)


def send_many(items: Iterable[JobInput], progress: Progress | None = None) -> list[uuid.UUID]:
    """Validate all jobs, then enqueue them in batches; returns their ids in order."""
    return _dispatcher().send_many(items, progress)
