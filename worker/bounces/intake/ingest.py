"""Ingest one inbound report: verify its return-path token, parse it, record what it says.

Order of steps, each of which may end the ingest:

1. parse the raw message (:func:`worker.bounces.classify.parse.parse_bounce`);
2. find the job: the first ``b+<token>@<bounce domain>`` among the SMTP recipients, else among
   the report's own envelope headers (Delivered-To, To ...), else (a forwarded mailbox) anywhere
   in the message. A report sent to the feedback-loop address counts only through a token in
   the original it quotes. A token is only trusted when its HMAC verifies under the current or a
   previous secret key. A token that is named but does not verify is a forgery: logged and
   dropped, with no row, so a stranger cannot write into anyone's Failed Sends. The token names
   the one recipient the return path was issued for, and only that recipient is touched; a
   token issued before recipients were bound names the job only, which is enough for a job with
   one recipient, and only a note on the job otherwise;
3. load the job's owner, channel, subject, identity and recipients from its Redis state hash
   (written by the producer and by the MSC delivery); only MSC jobs carry our return path;
4. by kind: a failure becomes one Failed Send per failed recipient (kind ``bounced``), an ARF
   abuse report one of kind ``complaint``; hard bounces and complaints go on the owner's
   suppression list; a delay warning is a note on the job; an auto-reply is ignored.

Everything is idempotent (rows are unique per job, recipient and kind; suppressions per owner
and address), so a report delivered twice, or a task run twice, changes nothing the second time.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any

import redis
import structlog
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select

from config import keys
from config.events import add_events
from config.settings import Settings
from config.states import JobState
from worker.bounces.classify.model import Bounce, BounceReport
from worker.bounces.classify.parse import parse_bounce
from worker.bounces.classify.quoted import quoted_original
from worker.bounces.intake.enqueue import InboundMessage, envelope_domains
from worker.failures.kinds import FailedKind
from worker.failures.rows import failed_send_row
from worker.failures.unsubscribes import unsubscribe
from worker.jobs import events
from worker.message.returnpath import (
    PREFIX,
    Token,
    is_return_domain,
    parse_token,
    token_from_address,
)
from worker.message.unsubscribe import mailto_address, read_token, token_in_subject
from worker.observe.logging import log_context
from worker.store import Store, repo
from worker.store.models import MessageRecord

log = structlog.get_logger("maildispatch.bounces.ingest")

#: ARF feedback types that are a recipient's complaint (RFC 5965 3.5); ``not-spam`` and the
#: DMARC ``auth-failure`` reports are not, and are ignored
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})
#: actions of recipients that were not failures (RFC 3464 2.3.3)
_NOT_FAILED = frozenset({"delayed", "delivered", "relayed", "expanded"})
_NOT_FAILED_REASONS = frozenset({"delivered", "feedback", "vacation"})


@dataclass(frozen=True)
class Outcome:
    """What an ingest did, returned by the task (no addresses, no content)."""

    result: str  # recorded | complaint | unsubscribed | delay | autoreply | ignored | dropped...
    job_id: str | None = None
    rows: int = 0
    suppressed: int = 0
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


@dataclass(frozen=True)
class JobInfo:
    """What the job's state hash says about it."""

    owner: str
    channel: str
    subject: str
    identity: str
    recipients: tuple[str, ...]
    metadata: dict[str, Any]


class Ingest:
    """Turns inbound reports into Failed Sends, suppressions and job-state notes."""

    def __init__(self, settings: Settings, client: redis.Redis, store: Store) -> None:
        self.settings = settings
        self.redis = client
        self.store = store
        self.domain = settings.bounce_domain.lower()
        self.secret_keys = settings.verifying_keys()
        self.fbl = settings.fbl_address
        self.unsubscribe = mailto_address(settings.bounce_domain)
        self.label = settings.return_path_label  # verified domains' bounces.<domain>
        self._token_in_text = re.compile(
            rb"(?i)\bb\+([a-z2-7]{30,60})@(?:"
            + re.escape(self.domain.encode())
            + rb"|"
            + re.escape(self.label.encode())
            + rb"\.[a-z0-9-]+(?:\.[a-z0-9-]+)+)"
        )

    # -- the steps --------------------------------------------------------------------------
    def _to_unsubscribe(self, message: InboundMessage) -> bool:
        """Whether the message was sent to List-Unsubscribe's mailto address: by its envelope
        (the bounce server), or, for one read from a mailbox (bounce-poll: no envelope), by its
        Delivered-To or To. Either way its token (in the Subject) is what decides."""
        addresses: Iterable[str] = message.rcpt_tos
        if not message.rcpt_tos:
            head = BytesHeaderParser().parsebytes(message.raw[:65536], headersonly=True)
            fields = [*head.get_all("Delivered-To", []), *head.get_all("To", [])]
            addresses = [a for _, a in getaddresses([str(f) for f in fields])]
        return any(a.strip().strip("<>").lower() == self.unsubscribe for a in addresses)

    def handle(self, message: InboundMessage) -> Outcome:
        """Ingest one message; raises only when Redis or the database failed (retry then)."""
        if self._to_unsubscribe(message):
            return self._unsubscribe(message)
        try:
            report = parse_bounce(message.raw)
        except SoftTimeLimitExceeded:
            raise  # the task keeps the message (worker/bounces/intake/tasks.py)
        except Exception:  # a parser bug: counted and logged, never retried (it would recur)
            log.exception("bounce_parse_crashed", size=len(message.raw), source=message.source)
            self.redis.hincrby(keys.COUNTERS, "bounce_parse_errors", 1)
            return Outcome("dropped", why="parse_error")
        token, found_in = self.find_job(message, report)
        if token is None:
            log.warning(
                "bounce_dropped",
                why=found_in,
                source=message.source,
                kind=report.kind,
                rcpt_domains=envelope_domains(message.rcpt_tos or report.envelope_recipients),
            )
            self.redis.hincrby(keys.COUNTERS, f"bounces_{found_in}", 1)
            return Outcome("dropped", why=found_in)
        with log_context(job_id=str(token.job_id), source=message.source):
            return self._for_job(token, message, report)

    def find_job(self, message: InboundMessage, report: BounceReport) -> tuple[Token | None, str]:
        """The token of the report, and where it was found (or why there is none)."""
        fbl = any(a.strip().strip("<>").lower() == self.fbl for a in message.rcpt_tos)
        places = [] if fbl else [("envelope", message.rcpt_tos)]
        if not fbl:
            places.append(("headers", report.envelope_recipients))
        for where, addresses in places:
            tokens = [a for a in addresses if self._is_token_address(a)]
            for address in tokens:
                token = token_from_address(address, self.secret_keys, self.domain, self.label)
                if token is not None:
                    return token, where
            if tokens:
                return None, "forged_token"
        # no return path named where it belongs: a feedback loop report, or a mailbox that lost
        # Delivered-To; the original message quoted in it still carries its token. A report to
        # the feedback-loop address counts only through the quoted original.
        text = message.raw
        if fbl:
            quoted = quoted_original(text)  # not the reporter's own headers or parts
            if quoted is None:
                return None, "no_token"
            text = quoted
        named = False
        for match in self._token_in_text.finditer(text):
            named = True
            token = parse_token(match.group(1).decode("ascii"), self.secret_keys)
            if token is not None:
                return token, "body"
        return None, "forged_token" if named else "no_token"

    def _is_token_address(self, address: str) -> bool:
        local, _, domain = address.strip().strip("<>").rpartition("@")
        return is_return_domain(domain, self.domain, self.label) and local.lower().startswith(
            PREFIX
        )

    def _for_job(self, token: Token, message: InboundMessage, report: BounceReport) -> Outcome:
        job_id = str(token.job_id)
        job = self.load_job(job_id)
        if job is None:
            log.warning("bounce_job_unknown", kind=report.kind)
            return Outcome("dropped", job_id, why="job_unknown")
        if job.channel != "msc":  # only MSC mail carries our return path
            log.warning("bounce_wrong_channel", channel=job.channel)
            return Outcome("dropped", job_id, why="not_msc")
        if report.kind == "autoreply":
            log.info("bounce_autoreply_ignored")
            return Outcome("autoreply", job_id)
        if token.recipient_tag is None and len(job.recipients) > 1 and report.kind != "delay":
            return self._job_only(job_id, report)
        if token.recipient_tag is not None:
            named = [r for r in job.recipients if token.names(r)]
            if not named:
                log.warning("bounce_recipient_not_in_job", why="token_recipient")
                return Outcome("dropped", job_id, why="recipient_not_in_job")
            job = dataclasses.replace(job, recipients=(named[0],))
        if report.kind == "feedback":
            return self._complaint(job_id, job, report)
        failed = self.failures(report, message.raw)
        if failed:
            return self._bounced(job_id, job, failed)
        if report.kind == "delay" or any(b.action == "delayed" for b in report.bounces):
            return self._delayed(job_id, report)
        log.info("bounce_unrecognized", kind=report.kind, recipients=len(report.bounces))
        if report.kind in ("unknown", "bounce"):  # no failed recipient found: kept, counted
            self.redis.hincrby(keys.COUNTERS, "bounces_unrecognized", 1)
        return Outcome("unrecognized", job_id, why=report.kind)

    @staticmethod
    def failures(report: BounceReport, raw: bytes) -> list[Bounce]:
        """The recipients the report says failed (a final expiry is ``failed`` already: the
        parser tells it from a delay warning, worker/bounces/classify/expiry.py)."""
        return [
            b
            for b in report.bounces
            if b.reason not in _NOT_FAILED_REASONS
            and (b.action == "failed" or (b.action not in _NOT_FAILED and b.reason != "expired"))
        ]

    def _unsubscribe(self, message: InboundMessage) -> Outcome:
        """A mail to List-Unsubscribe's mailto address: its Subject's token, verified."""
        subject = BytesHeaderParser().parsebytes(message.raw).get("Subject", "")
        token = token_in_subject(str(subject))
        who = read_token(token, self.secret_keys) if token else None
        if who is None:
            log.warning("unsubscribe_dropped", why="no_token" if token is None else "forged")
            self.redis.hincrby(keys.COUNTERS, "unsubscribes_dropped", 1)
            return Outcome("dropped", why="unsubscribe_token")
        unsubscribe(self.store, self.redis, self.settings, who)
        log.info("unsubscribed", job_id=who.job_id, source=message.source)
        return Outcome("unsubscribed", who.job_id, suppressed=1)

    # -- outcomes ----------------------------------------------------------------------------
    def _bounced(self, job_id: str, job: JobInfo, failed: Sequence[Bounce]) -> Outcome:
        pairs = self._attribute(job, failed)
        if not pairs:
            return Outcome("dropped", job_id, why="recipient_not_in_job")
        rows = [self._row(job_id, job, rcpt, b, FailedKind.BOUNCED) for rcpt, b in pairs]
        hard = sorted({(rcpt, b.reason) for rcpt, b in pairs if b.hard})
        self._write(rows, job.owner, hard, job_id)
        suppressed = {rcpt for rcpt, _ in hard}
        self._emit(
            job_id,
            (
                events.bounced(
                    job_id, job.owner, job.channel, job.metadata, rcpt, b, rcpt in suppressed
                )
                for rcpt, b in pairs
            ),
        )
        first = pairs[0][1]
        self._mark(
            job_id,
            state=JobState.BOUNCED,
            bounced_at=time.time(),
            bounced=len(rows),
            last_error=f"bounced: {first.status} {first.reason} {first.diagnostic}"[:500],
        )
        log.info(
            "bounce_recorded",
            rows=len(rows),
            suppressed=len(hard),
            reason=first.reason,
            status=first.status,
            hard=first.hard,
            rcpt_domains=envelope_domains([r for r, _ in pairs]),
        )
        return Outcome("recorded", job_id, rows=len(rows), suppressed=len(hard))

    def _complaint(self, job_id: str, job: JobInfo, report: BounceReport) -> Outcome:
        feedback = (report.feedback_type or "abuse").lower()
        if feedback not in COMPLAINT_TYPES:
            log.info("bounce_feedback_ignored", feedback_type=feedback[:40])
            return Outcome("ignored", job_id, why=f"feedback_{feedback[:40]}")
        pairs = self._attribute(job, report.bounces)
        if not pairs:
            return Outcome("dropped", job_id, why="recipient_not_in_job")
        rows = []
        for rcpt, b in pairs:
            row = self._row(job_id, job, rcpt, b, FailedKind.COMPLAINT)
            row["diagnostic"] = (b.diagnostic or f"feedback-type: {feedback}")[:2000]
            rows.append(row)
        reasons = sorted({(rcpt, f"complaint:{feedback}") for rcpt, _ in pairs})
        self._write(rows, job.owner, reasons, job_id)
        self._emit(
            job_id,
            (
                events.complained(job_id, job.owner, job.channel, job.metadata, rcpt, feedback)
                for rcpt, _ in pairs
            ),
        )
        self._mark(job_id, complained_at=time.time(), complaint=feedback)
        log.info("bounce_complaint_recorded", rows=len(rows), feedback_type=feedback)
        return Outcome("complaint", job_id, rows=len(rows), suppressed=len(reasons))

    def _job_only(self, job_id: str, report: BounceReport) -> Outcome:
        """A report through a token issued before return paths named a recipient.

        Such a token was given to every recipient of the job, so any of them could have written
        the report: it is noted on the job, and no recipient's row or suppression is written.
        """
        first = report.bounces[0] if report.bounces else None
        note = f"{report.kind} {first.status} {first.reason}" if first else report.kind
        self._mark(job_id, legacy_report_at=time.time(), legacy_report=note[:300])
        self.redis.hincrby(keys.COUNTERS, "bounces_legacy_token", 1)
        log.info("bounce_legacy_token_noted", kind=report.kind, recipients=len(report.bounces))
        return Outcome("ignored", job_id, why="legacy_token")

    def _delayed(self, job_id: str, report: BounceReport) -> Outcome:
        first = next((b for b in report.bounces if b.action == "delayed"), None)
        note = f"{first.status} {first.reason} {first.diagnostic}" if first else "delayed"
        self._mark(job_id, delayed_at=time.time(), delay_note=note[:300])
        log.info("bounce_delay_noted", recipients=len(report.bounces))
        return Outcome("delay", job_id)

    # -- helpers -----------------------------------------------------------------------------
    def load_job(self, job_id: str) -> JobInfo | None:
        """The job's facts from its state hash, or from the message history once Redis' copy
        has expired (``MAILDISPATCH_JOB_HOT_TTL``): a report weeks late is still attributed.
        None when neither knows it."""
        raw = self.redis.hgetall(keys.job(job_id))
        state = {_text(k): _text(v) for k, v in raw.items()} if raw else self._remembered(job_id)
        if not state.get("owner"):
            return None
        return JobInfo(
            owner=state["owner"],
            channel=state.get("channel", ""),
            subject=state.get("subject", ""),
            identity=state.get("identity", ""),
            recipients=tuple(_json_list(state.get("rcpts"))),
            metadata=_json_dict(state.get("metadata")),
        )

    def _remembered(self, job_id: str) -> dict[str, str]:
        with self.store.session() as session:
            row = session.scalar(select(MessageRecord).where(MessageRecord.job_id == job_id))
            if row is None:
                return {}
            return {**row.status, "owner": row.owner, "channel": row.channel}

    def _attribute(self, job: JobInfo, bounces: Iterable[Bounce]) -> list[tuple[str, Bounce]]:
        """Pair each reported recipient with the job's recipient it stands for.

        A reported recipient must be one the job was sent to, so a recipient who saw the return
        path cannot report other addresses. A single-recipient job (and a report whose token
        names its recipient: ``job`` then lists that one) also takes a report naming another
        address: the mail was forwarded or the address redacted (feedback loops do).
        """
        pairs: list[tuple[str, Bounce]] = []
        known = {r.lower(): r for r in job.recipients}
        bounces = list(bounces)
        if len(known) == 1:  # the report's line for that recipient, if it has one, is the one
            exact = [b for b in bounces if b.recipient.lower() in known]
            bounces = exact[:1] or bounces[:1]
        for b in bounces:
            rcpt = b.recipient.lower()
            if not known or rcpt in known:
                chosen = known.get(rcpt, rcpt)
            elif len(known) == 1:
                chosen = next(iter(known.values()))
                log.info("bounce_recipient_mapped", reported_domain=rcpt.rpartition("@")[2][:100])
            else:
                log.warning(
                    "bounce_recipient_not_in_job", reported_domain=rcpt.rpartition("@")[2][:100]
                )
                continue
            if chosen and all(chosen != c for c, _ in pairs):
                pairs.append((chosen, b))
        return pairs

    @staticmethod
    def _row(job_id: str, job: JobInfo, rcpt: str, b: Bounce, kind: FailedKind) -> dict[str, Any]:
        return failed_send_row(
            job_id=job_id,
            owner=job.owner,
            channel=job.channel,
            recipient=rcpt,
            kind=kind,
            action=b.action[:16] or None,
            reply_code=int(b.reply_code) if b.reply_code.isdigit() else None,
            enhanced_status=b.status[:16] or None,
            reason=(b.reason or "undefined")[:200],
            hard=b.hard,
            diagnostic=b.diagnostic,
            subject=job.subject,
            identity=job.identity,
            metadata=job.metadata,
            job=None,  # the body is not kept after delivery: a bounce cannot be resent as is
        )

    def _write(
        self,
        rows: list[dict[str, Any]],
        owner: str,
        suppress: Sequence[tuple[str, str]],
        job_id: str,
    ) -> None:
        with self.store.session() as session:
            repo.record_failed_sends(session, rows)
            for rcpt, reason in suppress:
                repo.suppress(session, owner, [rcpt], reason, job_id)

    def _emit(self, job_id: str, reported: Iterable[events.Event]) -> None:
        """The events of what was just written, before the job's state notes it (an ingest run
        again writes them again, with the same ids)."""
        pipe = self.redis.pipeline(transaction=False)
        add_events(pipe, job_id, reported, self.settings.events_retention)
        pipe.execute()

    def _mark(self, job_id: str, **fields: Any) -> None:
        """Note on the job's state hash, if it still exists (never recreate an expired job)."""
        mapping = {
            k: v if isinstance(v, str | int | float) else json.dumps(v) for k, v in fields.items()
        }
        mapping["updated_at"] = time.time()
        args: list[Any] = [int(self.settings.job_hot_ttl)]
        for k, v in mapping.items():
            args += [k, v]
        self.redis.eval(_MARK, 1, keys.job(job_id), *args)


# KEYS[1] job hash; ARGV: ttl, field, value, ... -> 1 if the job existed
_MARK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _json_list(value: str | None) -> list[str]:
    if not value:
        return []
    try:
        data = json.loads(value)
    except ValueError:
        return []
    return [str(x) for x in data] if isinstance(data, list) else []


def _json_dict(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    try:
        data = json.loads(value)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
