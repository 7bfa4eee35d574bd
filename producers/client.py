"""Validate and enqueue ``SendJob``s: ``send``, ``send_many`` and the ``Dispatcher`` behind them.

A job accepted here is recorded as ``queued`` in Redis and published inside a delivery batch
(DESIGN §4). A batch task carries 1..N jobs of one channel (and one owner for gmail/smtp).
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

import orjson
import redis
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
from producers.job import Channel, FieldError, InvalidJob, SendJob, limits, parse_job

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


class InvalidJobs(ValueError):
    """Some jobs of a ``send_many`` call were invalid; nothing was enqueued."""

    def __init__(self, errors: list[InvalidJob]) -> None:
        self.errors = errors
        shown = "; ".join(str(e) for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} invalid job(s): {shown}{more}")


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

# KEYS: job hashes. ARGV: ttl, enqueued_at, then one JSON array of [owner, channel, subject,
# identity, recipients] per job in KEYS order -> every job recorded as `queued`, with the TTL
# of job state
_QUEUED = """
local ttl = tonumber(ARGV[1])
local jobs = cjson.decode(ARGV[3])
for i, key in ipairs(KEYS) do
  local j = jobs[i]
  redis.call('HSET', key, 'state', 'queued', 'owner', j[1], 'channel', j[2],
             'subject', j[3], 'identity', j[4], 'recipients', tostring(j[5]),
             'attempts', '0', 'enqueued_at', ARGV[2])
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
"""


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

# KEYS: idempotency keys. ARGV: ttl, then the job id of each key -> every key still pending for
# that job is confirmed (set to the id, with the ttl), or released (deleted) when ttl is 0
_SETTLE = """
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == 'p:' .. ARGV[i + 1] then
    if ttl > 0 then redis.call('SET', key, ARGV[i + 1], 'EX', ttl) else redis.call('DEL', key) end
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


class _QueuedStates:
    """Records the queued state of jobs in Redis, without waiting for Redis in between.

    One script call per chunk of jobs, its fields in one JSON argument, packed by hiredis
    (redis-py packs each argument in Python, ~1 µs each), on a connection of its own; the
    replies are read by ``confirm``, which raises the first error.
    """

    def __init__(self, client: redis.Redis, ttl: int, now: float) -> None:
        self._pool = client.connection_pool
        self._conn: Any = None
        self._ttl = ttl
        self._now = repr(now)
        self._calls = 0

    def send(self, jobs: Sequence[tuple[int, SendJob, str]]) -> None:
        if not jobs:
            return
        fields = fastjson.dumps(
            [
                (j.owner, str(j.channel), j.subject[:200], str(j.identity), _recipient_count(j))
                for _, j, _ in jobs
            ]
        )
        command: tuple[Any, ...] = ("EVAL", _QUEUED, len(jobs), *[keys.job(i) for _, _, i in jobs])
        if self._conn is None:
            self._conn = self._pool.get_connection()
        try:
            packed = pack_command((*command, self._ttl, self._now, fields))
            self._conn.send_packed_command([packed], check_health=self._calls == 0)
        except BaseException:
            self._drop()
            raise
        self._calls += 1

    def confirm(self) -> None:
        """Every state sent is recorded (or the first error is raised); the connection released."""
        try:
            while self._calls:
                self._calls -= 1
                self._conn.read_response()
        except BaseException:
            self._drop()
            raise
        if self._conn is not None:
            self._pool.release(self._conn)
            self._conn = None

    def close(self) -> None:
        """Done, after a failure: the replies not read yet are read (errors ignored)."""
        with contextlib.suppress(redis.RedisError, OSError):
            self.confirm()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()  # replies left unread: not reusable
            self._pool.release(self._conn)
            self._conn = None


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


class Dispatcher:
    """Validates jobs and publishes them to the per-channel queues. Thread-safe; reuse one."""

    def __init__(self, settings: Settings | None = None, celery_app: Celery | None = None) -> None:
        self.settings = settings or get_settings()
        self.settings.require_secret_key()
        self.celery = celery_app or make_celery(self.settings, "maildispatch-producer")
        self.redis = redis.Redis.from_url(self.settings.state_redis_url)

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
        ids: list[uuid.UUID] = []
        errors: list[InvalidJob] = []
        # (position in `given`, job, its id as text) of every job to enqueue
        accepted: list[tuple[int, SendJob, str]] = []
        claimed: set[str] = set()  # ids whose idempotency keys this call claimed
        states = _QueuedStates(self.redis, int(self.settings.job_ttl), now)
        try:
            # Chunk by chunk, so that Redis records the queued states of one chunk (a third of
            # the time it takes to validate it) while the next is validated; every state is
            # confirmed before the first job is published. After an invalid job, the rest is
            # only validated (every bad job is reported) and what was recorded is undone.
            for start in range(0, len(given), STATE_CHUNK):
                jobs = self._validate_chunk(given, start, errors)
                if errors:
                    continue
                jobs = self._resolve_channels(jobs)
                chunk_ids, fresh = self._claim_idempotency(jobs, claimed)
                ids += chunk_ids
                new = [(start + i, jobs[i], str(jobs[i].id)) for i in fresh]
                accepted += new
                states.send(new)
            states.confirm()
            if errors:
                raise InvalidJobs(errors)
            later: list[SendJob] = []
            groups: dict[tuple[str, str], list[Entry]] = {}
            for i, job, job_id in accepted:
                if job.send_at and job.send_at.timestamp() > now:
                    later.append(job)
                    continue
                data = given[i]
                group = groups.setdefault(_batch_key(str(job.channel), job.owner), [])
                group.append((job_id, job.owner, data if type(data) is dict else None, job))
            if later:
                self._schedule(later)
            # one job, as a service sends per user action: the urgent lane (config/celery.py)
            urgent = len(accepted) - len(later) == 1
            self._publish_groups(groups, progress, urgent=urgent)
        except BaseException:
            states.close()  # its replies read (or its connection dropped) before the undo
            self._forget([job for _, job, _ in accepted])
            raise
        if claimed:  # published, so accepted: a key not confirmed lapses after PENDING_TTL
            with contextlib.suppress(redis.RedisError):
                self._settle([j for _, j, _ in accepted], self.settings.job_ttl)
        return ids

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
        self._publish_groups(groups, progress)

    def _publish_groups(
        self,
        groups: Mapping[tuple[str, str], list[Entry]],
        progress: Progress | None,
        urgent: bool = False,
    ) -> None:
        """Each group's jobs (id, owner, queue form) as batch tasks of at most batch_size jobs."""
        # Straight to the channel's queue through the default exchange (the queue's name is the
        # routing key): on Redis, kombu would otherwise read the exchange's bindings back with
        # one round trip per message. On Redis the messages are also written in pipelines of up
        # to PUBLISH_PIPELINE (kombu's publish batch), all of them before this returns; RabbitMQ
        # publishes each at once, with its confirm.
        # ``progress`` hears of jobs once they are written: after each flush of the pipeline
        unreported = sent = 0
        with (
            self.celery.producer_or_acquire() as producer,
            producer.batch(max_size=PUBLISH_PIPELINE) as pipeline,
        ):
            for (channel, _), group in groups.items():
                queue = QUEUE[channel]
                for chunk in batches(group, self.settings.batch_size):
                    self.celery.send_task(
                        DELIVER_TASK[channel],
                        args=(_encode(chunk, channel),),
                        queue=queue,
                        exchange="",
                        routing_key=queue,
                        producer=producer,
                        priority=PRIORITY_URGENT if urgent else PRIORITY_BULK,
                        argsrepr=_argsrepr(
                            [e[0] for e in chunk[:3]],
                            {e[1] for e in chunk},
                            channel,
                            len(chunk),
                        ),
                        kwargsrepr="{}",
                    )
                    if progress:
                        unreported += len(chunk)
                        sent += 1
                        if sent % PUBLISH_PIPELINE == 0:
                            pipeline.flush()
                            progress(unreported)
                            unreported = 0
            if progress and unreported:
                pipeline.flush()
                progress(unreported)

    def _resolve_channels(self, jobs: list[SendJob]) -> list[SendJob]:
        owners = sorted({j.owner for j in jobs if j.channel is None})
        if not owners:
            return jobs
        prefs = self.redis.hmget(keys.PREFERRED_CHANNEL, owners)
        chosen = {
            o: Channel(_text(p)) if p else Channel.MSC for o, p in zip(owners, prefs, strict=True)
        }
        return [j if j.channel else j.model_copy(update={"channel": chosen[j.owner]}) for j in jobs]

    def _claim_idempotency(
        self, jobs: list[SendJob], claimed: set[str]
    ) -> tuple[list[uuid.UUID], list[int]]:
        """Every job's id (a repeated idempotency key's first id) and the positions of new jobs.

        A key claimed by this call (``claimed``, updated here) or confirmed by an earlier one
        gives its job's id; a key another call is still enqueueing is waited for (see
        ``idempotency_wait``): taken over if that call released it, or
        :class:`IdempotencyInProgress`.
        """
        first: dict[uuid.UUID, uuid.UUID] = {}
        waiting = [j for j in jobs if j.idempotency_key]
        deadline = time.monotonic() + self.settings.idempotency_wait
        while waiting:
            replies = self._eval(
                _CLAIM_KEYS,
                [keys.idempotency(j.owner, j.idempotency_key or "") for j in waiting],
                [PENDING_TTL, *[f"{_PENDING}{j.id}" for j in waiting]],
            )
            busy = []
            for j, stored in zip(waiting, replies, strict=True):
                value = _text(stored)
                job_id = value.removeprefix(_PENDING)
                if job_id == str(j.id):
                    claimed.add(job_id)
                elif not value or (value != job_id and job_id not in claimed):
                    busy.append(j)  # lapsed meanwhile, or another call has not published yet
                    continue
                first[j.id] = uuid.UUID(job_id)
            waiting = busy
            if waiting and time.monotonic() >= deadline:
                with contextlib.suppress(redis.RedisError):
                    self._settle([j for j in jobs if first.get(j.id) == j.id], 0)
                raise IdempotencyInProgress([j.idempotency_key or "" for j in waiting])
            if waiting:
                time.sleep(0.02)
        if not first:
            return [j.id for j in jobs], list(range(len(jobs)))
        ids = [first.get(j.id, j.id) for j in jobs]
        fresh = [i for i, j in enumerate(jobs) if ids[i] == j.id]
        return ids, fresh

    def _settle(self, jobs: Sequence[SendJob], ttl: float) -> None:
        """Confirm (ttl > 0) or release (0) the idempotency keys these jobs still hold pending."""
        keyed = [j for j in jobs if j.idempotency_key]
        for chunk in batches(keyed, STATE_CHUNK):
            names = [keys.idempotency(j.owner, j.idempotency_key or "") for j in chunk]
            self._eval(_SETTLE, names, [int(ttl), *[str(j.id) for j in chunk]])

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

    def _schedule(self, jobs: list[SendJob]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for j in jobs:
            assert j.send_at is not None
            job_id = str(j.id)
            pipe.set(keys.payload(job_id), json.dumps(job_wire(j)), ex=int(self.settings.job_ttl))
            pipe.hset(
                keys.job(job_id), mapping={"state": "scheduled", "next_at": j.send_at.timestamp()}
            )
            pipe.zadd(keys.SCHEDULE, {job_id: j.send_at.timestamp()})
        pipe.execute()

    def _forget(self, jobs: list[SendJob]) -> None:
        """Undo the bookkeeping of jobs that could not be published: they were not accepted."""
        pipe = self.redis.pipeline(transaction=False)
        for j in jobs:
            pipe.delete(keys.job(str(j.id)))
        with contextlib.suppress(redis.RedisError):
            pipe.execute()
        with contextlib.suppress(redis.RedisError):
            self._settle(jobs, 0)  # their idempotency keys, where still this call's

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
