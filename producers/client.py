"""Validate and enqueue ``SendJob``s: ``send``, ``send_many`` and the ``Dispatcher`` behind them.

A job accepted here is recorded as ``queued`` in Redis and published inside a delivery batch
(DESIGN §4). A batch task carries 1..N jobs of one channel (and one owner for gmail/smtp).
The parts: the queued states (producers/enqueue.py), idempotency keys (producers/idempotency.py),
the queue form of jobs (producers/wire.py), batch tasks onto the queues (producers/publishing.py),
scheduled jobs and cancels (producers/schedule.py).
"""

from __future__ import annotations

import contextlib
import gc
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis
import structlog
from celery import Celery
from pydantic import TypeAdapter, ValidationError

from config import keys
from config.celery import make_celery
from config.redisconn import ReplicaWait, connect
from config.settings import Settings, get_settings
from producers.enqueue import (
    STATE_CHUNK,
    Backoff,
    QueuedStates,
    as_text,
    retrying,
    ttl_until_due,
    undo,
)
from producers.errors import (
    EnqueueFailed,
    IdempotencyInProgress,
    InvalidJobs,
    JobIdsTaken,
    JobIdTaken,
)
from producers.idempotency import IdempotencyKeys
from producers.identities import unverified
from producers.job import Channel, FieldError, InvalidJob, SendJob, limits, parse_job
from producers.preferences import Preferences
from producers.publishing import NotPublished, Publisher
from producers.schedule import cancel_job, park
from producers.wire import Entry, batch_key

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


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a call builds many jobs.

    Each collection pass rescans every job built so far: a large share of ``send_many``'s time
    on big calls (docs/performance.md). Nothing it builds is cyclic garbage; collection resumes
    after.
    """
    if not gc.isenabled():  # already paused (by the caller or a concurrent call)
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _box_count(job: SendJob) -> int:
    """How many mailboxes a job names, a repeated one counted each time."""
    return len(job.to) + len(job.cc) + len(job.bcc)


def _recipient_count(job: SendJob) -> int:
    """``len(job.recipients)``, without building the list in the common case of one mailbox."""
    boxes = _box_count(job)
    return boxes if boxes == 1 else len(job.recipients)


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
        self.redis = connect(self.settings.state_redis_url)
        #: on a cluster, what a call enqueues or cancels is on a replica before it answers
        self.wait = ReplicaWait.of(self.settings)
        self.idempotency = IdempotencyKeys(self.redis, self.settings)
        self.publisher = Publisher(self.celery, self.redis, self.settings)
        self.preferences = Preferences(self.redis)

    # -- validation ---------------------------------------------------------------------------
    def validate(self, data: JobInput, index: int | None = None) -> SendJob:
        """One job, checked against the contract and this deployment's limits."""
        most = self.settings.max_recipients
        if type(data) is dict:  # the common case: no Mapping (ABC) check, no copy
            job = parse_job(data, index, max_recipients=most)
        elif isinstance(data, SendJob):
            # validated again: pydantic's model_copy(update=...) and model_construct make a
            # SendJob without validating it (a template job copied per send), and a job the
            # worker finds invalid is dropped there, long after the call said it was accepted
            job = parse_job(data.model_dump(warnings=False), index, max_recipients=most)
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
        states = QueuedStates(self.redis, now, backoff, self.wait)
        try:
            # Chunk by chunk, so that Redis records the queued states of one chunk (a third of
            # the time it takes to validate it) while the next is validated; every state is
            # confirmed before the first job is published. After an invalid job, the rest is
            # only validated (every bad job is reported); then, or after a taken id, what was
            # recorded is undone.
            # A call that may make one task message (a single send, a small batch) holds its
            # states back: if it does, states and message go in one script (one round trip)
            one_task = len(given) <= min(STATE_CHUNK, self.settings.batch_size)
            held: list[tuple[str, tuple[Any, ...]]] | None = (
                [] if one_task and self.publisher.one_script else None
            )
            for start in range(0, len(given), STATE_CHUNK):
                jobs = self._validate_chunk(given, start, errors)
                if errors:
                    continue
                jobs = self._resolve_channels(jobs, backoff)
                if self.settings.require_verified_identities and self._unverified(
                    jobs, start, errors, backoff
                ):
                    continue
                chunk_ids, fresh = self.idempotency.claim(jobs, claimed, backoff)
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
                group = groups.setdefault(batch_key(str(job.channel), job.owner), [])
                group.append((job_id, job.owner, data if type(data) is dict else None, job))
            # one job, as a service sends per user action: the urgent lane (config/celery.py)
            urgent = len(accepted) - len(later) == 1
            tasks = self.publisher.tasks(groups)
            elsewhere: list[str] | None = None  # ids that are other jobs' already
            if held and not (errors or taken or later) and len(tasks) == 1:
                # None: the broker is not this Redis after all
                elsewhere = self.publisher.record_with_task(
                    held, tasks[0], urgent, now, states.nonce, backoff
                )
            published = elsewhere is not None
            if not published:
                states.send(held or [])
                elsewhere = states.confirm()
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
                    retrying(
                        lambda: park(self.redis, later, now, self.settings.job_ttl, self.wait),
                        backoff,
                    )
                self.publisher.publish_tasks(tasks, progress, urgent=urgent, backoff=backoff)
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
                self.idempotency.settle([j for _, j, _ in accepted], now, backoff)
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
            taken_by_worker = undo(
                self.redis, [str(j.id) for j in lost], nonce, int(self.settings.job_ttl), backoff
            )
            failed = failed - taken_by_worker
            kept += [j for j in lost if str(j.id) in taken_by_worker]
            lost = [j for j in lost if str(j.id) not in taken_by_worker]
            self.idempotency.settle(lost, now, backoff, release=True)
            if claimed:
                self.idempotency.settle(kept, now, backoff)
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
            key = batch_key(wire["channel"], owner)
            groups.setdefault(key, []).append((wire["id"], owner, wire, None))
        try:
            self.publisher.publish_groups(groups, progress)
        except NotPublished as exc:  # the scheduler's or reaper's next round publishes them
            raise exc.__cause__ or exc from None

    def _resolve_channels(
        self, jobs: list[SendJob], backoff: Backoff | None = None
    ) -> list[SendJob]:
        owners = sorted({j.owner for j in jobs if j.channel is None})
        if not owners:
            return jobs
        backoff = backoff or Backoff(self.settings.enqueue_retry_for)
        prefs = retrying(lambda: self.preferences.of(owners), backoff)
        chosen = {o: Channel(p) for o, p in prefs.items()}
        return [j if j.channel else j.model_copy(update={"channel": chosen[j.owner]}) for j in jobs]

    def _unverified(
        self, jobs: list[SendJob], start: int, errors: list[InvalidJob], backoff: Backoff
    ) -> bool:
        """Note every MSC job whose identity its owner has not verified; any?"""
        domain = self.settings.msc_domain
        refused = retrying(lambda: unverified(self.redis, jobs, domain), backoff)
        for i in refused:
            message = f"{jobs[i].owner} has not verified this identity's domain or address"
            errors.append(InvalidJob([FieldError(field="identity", message=message)], start + i))
        return bool(refused)

    def _forget(self, jobs: list[SendJob], nonce: str) -> None:
        """Undo the bookkeeping of jobs that could not be enqueued: only what this call (its
        ``nonce``) recorded, never another job's state."""
        backoff = Backoff(self.settings.enqueue_retry_for)
        with contextlib.suppress(redis.RedisError):
            undo(self.redis, [str(j.id) for j in jobs], nonce, 0, backoff)
        with contextlib.suppress(redis.RedisError):
            # their keys, where still this call's
            self.idempotency.settle(jobs, 0.0, backoff, release=True)

    def cancel(self, job_id: uuid.UUID | str) -> str | None:
        """Cancel a job that has not been sent yet; returns its state after the call.

        ``"cancelled"`` when it is (now, or by an earlier call); the state that made it too late
        otherwise (``"sending"``: its SMTP transaction is under way; ``"sent"``, ``"failed"``...);
        None for an unknown job (or one whose state expired). A job waiting on the queue or in
        the schedule (a retry, a ``send_at``, a rate-limit deferral) is cancelled; the worker
        that later takes its task skips it. Recipients a partly delivered job reached already
        keep what they got.
        """
        return cancel_job(self.redis, str(job_id), self.settings.events_retention, self.wait)

    def status(self, job_id: uuid.UUID | str) -> dict[str, str] | None:
        """The job's state hash from Redis (None when unknown or expired)."""
        raw = self.redis.hgetall(keys.job(str(job_id)))
        if not raw:
            return None
        return {as_text(k): as_text(v) for k, v in raw.items()}

    def close(self) -> None:
        """Release the broker and Redis connections."""
        self.publisher.close()
        self.preferences.close()
        self.redis.close()
        self.celery.close()


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
