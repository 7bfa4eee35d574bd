"""Deliver a batch of jobs of one channel: claim, build, send, and record each job on its own.

This is the order of steps every channel shares (the channel only sends). The worker's stream
(worker/consume/stream.py) calls :meth:`Delivery.run_batches` with every task message it took in one
loop iteration; the plain Celery task body calls :meth:`Delivery.run_batch`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import redis
import sqlalchemy.exc
import structlog

from config import fastjson
from config.retry import next_retry
from config.settings import Settings
from config.states import JobState
from producers.job import SendJob
from worker.channels.base import DeliveryChannel, Receipt
from worker.channels.registry import policy_for
from worker.consume.gate import Gate
from worker.errors import DeliveryError, PermanentError, TransientError
from worker.failures.batched import RowWriter
from worker.failures.kinds import FailedKind
from worker.failures.rows import failed_send_row
from worker.jobs import events
from worker.jobs.pacing import Pacing
from worker.jobs.state import Claim, JobStates
from worker.message import unsubscribe
from worker.message.build import build_message
from worker.observe import metrics
from worker.observe.logging import log_context
from worker.prepared import BatchSummary, Prepared, prepare
from worker.store import Store

log = structlog.get_logger("maildispatch.delivery")

#: not a bug in a job: the store or Redis failed under it. Recording the job as failed would be
#: wrong (the relay may have accepted it); the batch crashes and is retried instead
INFRASTRUCTURE_ERRORS = (redis.RedisError, sqlalchemy.exc.OperationalError)
#: writes of a Failed Send row after the server accepted the message (0.25 s, 1 s, then 4 s)
RECORD_ATTEMPTS = 4

#: the Failed Send of a job whose state was gone when a worker took it (it may have been sent
#: before its state expired, so it is not sent blindly)
VANISHED = "the job's state expired or was lost before delivery; not sent (send it again)"


class Accounts(Protocol):
    """The owner's connected account for a channel (None where the channel needs none)."""

    async def load(self, channel: str, owner: str) -> Any:
        """The account, or raise PermanentError(kind=FailedKind.CONFIG) when none is connected."""
        ...

    async def auth_failed(self, channel: str, owner: str, error: DeliveryError) -> None:
        """Mark the account as needing the user's attention."""
        ...


class NoAccounts:
    """For channels that send as the operator: no per-owner account."""

    async def load(self, channel: str, owner: str) -> Any:
        """Always None."""
        return None

    async def auth_failed(self, channel: str, owner: str, error: DeliveryError) -> None:
        """Nothing to mark."""


def reason_of(error: DeliveryError) -> str:
    """A short reason in plain words for a Failed Send row."""
    from worker.failures.send_reasons import reason_for

    return reason_for(
        error.reply_code, error.enhanced_status, error.text, error.kind, error.command
    )


class Delivery:
    """Per-process delivery of batches: holds the channel, job states and the store."""

    def __init__(
        self,
        settings: Settings,
        channel: DeliveryChannel,
        states: JobStates,
        store: Store,
        accounts: Accounts | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.settings = settings
        self.channel = channel
        self.states = states
        self.store = store
        self.rows = RowWriter(lambda: self.store)
        self.accounts = accounts or NoAccounts()
        self.policy = policy_for(settings, channel.name)
        self.pacing = Pacing(settings, channel.name, states.redis)
        #: how many jobs of this process are between their claim and their outcome at once
        self.gate = gate or Gate(settings.worker_jobs)

    async def run_batch(self, wires: Sequence[Any]) -> BatchSummary:
        """Deliver every job of the batch concurrently; each is claimed and recorded on its own."""
        [result] = await self.run_batches([wires])
        if isinstance(result, BaseException):
            raise result
        return result

    async def run_batches(
        self,
        batches: Sequence[Sequence[Any]],
        urgent: Sequence[bool] = (),
        done: Callable[[int, BatchSummary | BaseException], None] | None = None,
    ) -> list[BatchSummary | BaseException]:
        """Deliver the jobs of several batches (task messages) at once, each batch on its own:
        :meth:`prepare`, then :meth:`run_prepared`."""
        return await self.run_prepared(self.prepare(batches), urgent, done)

    def prepare(self, batches: Sequence[Sequence[Any]]) -> Prepared:
        """Parse the batches' jobs and start their suppression lookup (worker/prepared.py):
        what the caller does next (registering them in flight) overlaps the lookup."""
        return prepare(batches, self.store, bounces=self.channel.owns_return_path)

    async def run_prepared(
        self,
        prepared: Prepared,
        urgent: Sequence[bool] = (),
        done: Callable[[int, BatchSummary | BaseException], None] | None = None,
    ) -> list[BatchSummary | BaseException]:
        """Deliver the jobs of prepared batches, each batch on its own.

        What a batch costs whatever its size (the suppression lookup, the metrics write) is
        paid once for all of them: a stream of one-job messages costs what one batch does.
        ``done(i, result)`` hears of batch ``i`` as soon as its last job is finished, without
        waiting for the others; the result is its summary, or the infrastructure error that
        crashed one of its jobs (the batch is then to be run again: claims decide). Jobs of an
        ``urgent`` batch pass every waiting job of the others at the process's gate.
        """
        parsed, summaries = prepared.parsed, prepared.summaries
        if prepared.invalid:
            await self.states.count("poison_jobs", prepared.invalid)
        suppressed = await prepared.suppressed  # before any claim (worker/prepared.py)

        async def one_batch(i: int) -> BatchSummary | BaseException:
            priority = 0 if i < len(urgent) and urgent[i] else 1
            results: list[str | BaseException]
            if len(parsed[i]) == 1:  # a single send: no second task for its one job
                job, wire = parsed[i][0]
                try:
                    results = [await self._gated(priority, job, wire, suppressed)]
                except Exception as exc:
                    results = [exc]
            else:
                results = await asyncio.gather(
                    *(self._gated(priority, job, wire, suppressed) for job, wire in parsed[i]),
                    return_exceptions=True,
                )
            summary = summaries[i]
            for state in results:
                if isinstance(state, str):
                    setattr(summary, state, getattr(summary, state) + 1)
            crashed = [r for r in results if isinstance(r, BaseException)]
            # Redis or the database failed under a job: the whole batch is run again, and the
            # jobs already finished are skipped then by their claim
            result: BatchSummary | BaseException = crashed[0] if crashed else summary
            if done is not None:
                done(i, result)
            return result

        outcome = await asyncio.gather(*(one_batch(i) for i in range(len(parsed))))
        total = BatchSummary()
        for summary in summaries:
            for name, count in summary.as_dict().items():
                setattr(total, name, getattr(total, name) + count)
        metrics.flush(self.states.auto, self.channel.name, total.as_dict())
        return outcome

    async def _gated(
        self,
        priority: int,
        job: SendJob,
        wire: dict[str, Any],
        suppressed: dict[str, dict[str, str]],
    ) -> str:
        await self.gate.acquire(priority)
        try:
            return await self._deliver_one(job, wire, suppressed)
        finally:
            self.gate.release()

    async def _deliver_one(
        self, job: SendJob, wire: dict[str, Any], suppressed: dict[str, dict[str, str]]
    ) -> str:
        job_id = str(job.id)
        with log_context(job_id=job_id, owner=job.owner, channel=self.channel.name):
            claim = await self.states.claim(job_id, job.owner, self.channel.name)
            if claim.decision in ("done", "busy", "wait"):
                log.info("delivery_skipped", decision=claim.decision, state=claim.final_state)
                if claim.decision == "wait" and await self.states.keep_waiting(job_id, wire):
                    # published early by a scheduler whose clock is ahead of this worker's
                    log.warning("delivery_not_due_rescheduled")
                return "skipped"
            if claim.decision == "vanished":  # its state expired or was lost: never silently
                log.error("delivery_state_vanished")
                error = PermanentError(VANISHED, kind=FailedKind.EXPIRED)
                await self._fail(job, wire, job.recipients, error)
                return "failed"
            with log_context(attempt=claim.attempt):
                try:
                    return await self._attempt(job, wire, claim, suppressed.get(job.owner, {}))
                except INFRASTRUCTURE_ERRORS:
                    raise  # Redis or the database is away: the batch is retried, claims decide
                except Exception as exc:  # a bug in maildispatch: recorded, never lost
                    log.exception("delivery_crashed")
                    error = PermanentError(
                        f"internal error: {type(exc).__name__}", kind=FailedKind.ERROR
                    )
                    await self._fail(job, wire, job.recipients, error)
                    return "failed"

    async def _attempt(
        self, job: SendJob, wire: dict[str, Any], claim: Claim, suppressed: dict[str, str]
    ) -> str:
        if claim.decision == "uncertain":
            log.warning("delivery_uncertain", policy=self.settings.on_uncertain)
            if self.settings.on_uncertain == "fail":
                error = PermanentError(
                    "the worker stopped while the server may have accepted the message; "
                    "not sent again (MAILDISPATCH_ON_UNCERTAIN=fail)",
                    kind=FailedKind.EXPIRED,
                )
                await self._fail(job, wire, claim.pending or job.recipients, error)
                return "failed"
        recipients = claim.pending or job.recipients
        blocked = [r for r in recipients if r in suppressed]
        if blocked:
            error = PermanentError(
                "recipient is on the suppression list", kind=FailedKind.SUPPRESSED
            )
            await self._record(job, wire, blocked, error)
            recipients = tuple(r for r in recipients if r not in suppressed)
            if not recipients:
                await self.states.finish(str(job.id), JobState.SUPPRESSED, last_error=error.text)
                log.info("delivery_suppressed", recipients=len(blocked))
                return "failed"
        log.debug("delivery_started", recipients=len(recipients))  # the outcome line says it all
        started = time.perf_counter()
        try:
            account = await self.accounts.load(self.channel.name, job.owner)
            if over := await self.pacing.over_limit(job, account, recipients):
                # over a fleet-wide limit: later
                event = events.deferred(job, self.channel.name, recipients, *over)
                await self.states.defer(str(job.id), wire, *over, events=[event])
                log.info(
                    "delivery_deferred", scope=over[1], delay_s=round(over[0] - time.time(), 1)
                )
                return "deferred"
            options = self.channel.message_options(job, account)
            message = build_message(
                job,
                domain=options.domain,
                sender=options.sender,
                from_address=options.from_address,
                date=_ready_at(job, claim) or None,
                dkim_keys=options.dkim_keys,
                extra_headers=unsubscribe.job_headers(job, self.settings),
            )
            envelope = options.envelope(tuple(recipients))
            receipt = await self.channel.deliver(message, envelope, account)
        except TransientError as exc:
            delay = self._next_delay(job, claim, exc)
            return await self._retry(job, wire, claim, tuple(recipients), exc, delay)
        except PermanentError as exc:
            if exc.kind == FailedKind.AUTH:
                await self.accounts.auth_failed(self.channel.name, job.owner, exc)
            await self._fail(job, wire, recipients, exc)
            return "failed"
        return await self._accepted(
            job, wire, claim, recipients, receipt, message.from_address, started
        )

    async def _accepted(
        self,
        job: SendJob,
        wire: dict[str, Any],
        claim: Claim,
        recipients: Sequence[str],
        receipt: Receipt,
        from_address: str,
        started: float,
    ) -> str:
        job_id = str(job.id)
        refused = dict(receipt.refused)
        taken = [r for r in recipients if r not in refused]
        retry = {r: e for r, e in refused.items() if isinstance(e, TransientError)}
        delay: float | None = None
        if retry:
            first = next(iter(retry.values()))
            delay = self._next_delay(job, claim, first)
            if delay is None and taken:
                # they give up in a transaction others accepted: Failed Sends like the
                # recipients refused outright, and the job is sent
                refused |= dict.fromkeys(retry, _gave_up(claim, first))
                retry = {}
        rejected = [r for r, e in refused.items() if not isinstance(e, TransientError)]
        unrecorded: list[str] = []
        if rejected:  # the others were accepted: a row that cannot be written changes nothing
            unrecorded = await self._record_accepted(job, wire, {r: refused[r] for r in rejected})
        accepted = len(recipients) - len(refused)
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        fields = {
            "from_address": from_address,
            # Gmail sends as the connected account, whatever address the identity named
            "from_replaced": "yes" if from_address != job.identity.address else "no",
            "reply": f"{receipt.reply_code or ''} {receipt.text}".strip()[:300],
            "provider_id": receipt.provider_id,
            "accepted": accepted,
        }
        if unrecorded:  # kept on the job's state since not in the store
            fields["unrecorded_failures"] = fastjson.dumps_text(unrecorded)
        if (
            self.channel.owns_return_path
        ):  # read back by bounce ingest (worker/bounces/intake/ingest.py)
            fields |= {
                "rcpts": fastjson.dumps_text([r.lower() for r in job.recipients]),
                "subject": job.subject[:200],
                "identity": str(job.identity),
                "metadata": fastjson.dumps_text(job.metadata) if job.metadata else None,
            }
        sent = events.sent(job, self.channel.name, taken, claim.attempt, fields)
        reported = [sent] if taken else []
        if retry:
            log.info(
                "delivery_partial", accepted=accepted, deferred=len(retry), rejected=len(rejected)
            )
            return await self._retry(
                job, wire, claim, tuple(retry), first, delay, reported=reported, **fields
            )
        state = JobState.SENT if accepted else JobState.FAILED
        if unrecorded:  # (a retry above writes its own last_error)
            fields["last_error"] = ("not in Failed Sends: " + "; ".join(unrecorded))[:500]
        if rejected and not accepted:
            fields["last_error"] = refused[rejected[0]].describe()[:500]
        await self.states.finish(job_id, state, events=reported, **fields)
        if accepted:
            metrics.accepted(self.channel.name, claim.enqueued_at, job.send_at)
        log.info(
            "delivery_accepted" if accepted else "delivery_rejected",
            reply_code=receipt.reply_code,
            accepted=accepted,
            rejected=len(rejected),
            duration_ms=elapsed,
        )
        return state

    def _next_delay(self, job: SendJob, claim: Claim, error: TransientError) -> float | None:
        """Seconds until the next attempt, or None when the job gives up (decided once: the
        delay is jittered). Counted from when the job was due: a scheduled job's wait for its
        send_at, and time deferred by limits, do not count against its give-up time."""
        age = time.time() - _ready_at(job, claim) - claim.deferred
        return next_retry(self.policy, claim.attempt, age, error.retry_after)

    async def _retry(
        self,
        job: SendJob,
        wire: dict[str, Any],
        claim: Claim,
        recipients: tuple[str, ...],
        error: TransientError,
        delay: float | None,
        reported: Sequence[events.Event] = (),
        **fields: Any,
    ) -> str:
        if delay is None:
            await self._fail(job, wire, recipients, _gave_up(claim, error))
            return "failed"
        now = time.time()
        pending = recipients if set(recipients) != set(job.recipients) else None
        event = events.retrying(
            job, self.channel.name, recipients, claim.attempt, now + delay, error
        )
        await self.states.schedule_retry(
            str(job.id),
            wire,
            now + delay,
            pending,
            [*reported, event],
            last_error=error.describe()[:500],
            **fields,
        )
        log.info(
            "delivery_retry_scheduled",
            reply_code=error.reply_code,
            enhanced_status=error.enhanced_status,
            delay_s=round(delay, 1),
        )
        return "retrying"

    async def _fail(
        self, job: SendJob, wire: dict[str, Any], recipients: Sequence[str], error: DeliveryError
    ) -> None:
        await self._record(job, wire, recipients, error)
        await self.states.finish(str(job.id), "failed", last_error=error.describe()[:500])
        log.info(
            "delivery_failed",
            kind=error.kind,
            reply_code=error.reply_code,
            enhanced_status=error.enhanced_status,
            recipients=len(recipients),
        )

    async def _record_accepted(
        self, job: SendJob, wire: dict[str, Any], refused: dict[str, DeliveryError]
    ) -> list[str]:
        """Rows of the recipients refused in a transaction the server accepted for others.

        Never raises: the job is ``sent`` next, whatever happens here, or a batch retry would
        deliver the accepted message again. A store blip is retried (a few seconds); a row still
        not written is logged with the error, and its recipient and error are returned (to keep
        on the job's state).
        """
        unrecorded: list[str] = []
        for rcpt, error in refused.items():
            for attempt in range(RECORD_ATTEMPTS):
                try:
                    await self._record(job, wire, [rcpt], error)
                    break
                except Exception as exc:
                    if attempt + 1 < RECORD_ATTEMPTS and isinstance(exc, INFRASTRUCTURE_ERRORS):
                        await asyncio.sleep(0.25 * 4**attempt)
                        continue
                    log.exception("failed_send_not_recorded", kind=error.kind)
                    unrecorded.append(f"{rcpt}: {error.describe()}"[:500])
                    break
        return unrecorded

    async def _record(
        self, job: SendJob, wire: dict[str, Any], recipients: Sequence[str], error: DeliveryError
    ) -> None:
        """Write Failed Send rows, then their event, before the state changes: a crash can only
        repeat a row (and the event, with the same id)."""
        reason, hard = reason_of(error), error.kind == FailedKind.SUPPRESSED or _hard(error)
        rows = [
            failed_send_row(
                job_id=str(job.id),
                owner=job.owner,
                channel=self.channel.name,
                recipient=rcpt,
                kind=error.kind,
                reply_code=error.reply_code,
                enhanced_status=error.enhanced_status,
                reason=reason,
                hard=hard,
                diagnostic=error.text,
                subject=job.subject,
                identity=str(job.identity),
                metadata=job.metadata,
                job=wire,
            )
            for rcpt in recipients
        ]
        await self.rows.write(rows)  # with concurrent jobs' rows, in one transaction
        await self.states.emit(
            str(job.id), [events.failed(job, self.channel.name, recipients, error, reason, hard)]
        )


def _hard(error: DeliveryError) -> bool:
    from worker.failures.send_reasons import is_hard

    return is_hard(error.reply_code, error.enhanced_status, error.text, error.command)


def _ready_at(job: SendJob, claim: Claim) -> float:
    """When the job was ready to go: enqueued, or its send_at if later (0: not known). The
    message's Date and the give-up time count from it, the same on every attempt."""
    due = job.send_at.timestamp() if job.send_at is not None else 0.0
    return max(claim.enqueued_at, due) if claim.enqueued_at else 0.0


def _gave_up(claim: Claim, error: TransientError) -> PermanentError:
    """The error recorded for recipients whose retries ran out."""
    return PermanentError(
        f"gave up after {claim.attempt} attempts: {error.describe()}",
        reply_code=error.reply_code,
        enhanced_status=error.enhanced_status,
        kind=FailedKind.EXPIRED,
    )
