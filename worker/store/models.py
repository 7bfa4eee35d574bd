"""SQLAlchemy models of the store. Schema changes go through an Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from worker.failures.kinds import FAILED_KINDS as _FAILED_KINDS


def stored_utc(value: datetime) -> datetime:
    """A time read back from the store, as UTC: SQLite hands back naive datetimes, and every
    time is stored as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    """Now, timezone-aware (stored as UTC)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


#: the kinds of Failed Send (DESIGN §7), plus ``error`` for a bug in maildispatch itself
FAILED_KINDS = _FAILED_KINDS


class FailedSend(Base):
    """One recipient of one job that was not delivered, as a product shows it to its user."""

    __tablename__ = "failed_sends"
    __table_args__ = (
        UniqueConstraint("job_id", "recipient", "kind", name="uq_failed_job_rcpt_kind"),
        # "did my mail to bob@ fail?": the search by recipient, whatever its case (migration 0006)
        Index("ix_failed_sends_owner_recipient", "owner", func.lower(text("recipient"))),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), index=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(16))
    #: a bounce's DSN action (RFC 3464 2.3.3: ``failed``, ``delayed`` ...); None at send time
    action: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reply_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    enhanced_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str] = mapped_column(String(200), default="")
    hard: Mapped[bool] = mapped_column(Boolean, default=False)
    diagnostic: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(String(998), default="")
    #: ``Name <address>``: up to 200 + 254 characters and quoting, so unbounded here (0007)
    identity: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    resend_job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    job_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # the job itself (body, attachments) is kept once per job in ``job_contents``, not per row


class JobContent(Base):
    """A failed job as enqueued (wire form), kept once however many rows refer to it.

    Resend enqueues it again; the retention purge (worker/store/retention.py) deletes it after
    ``MAILDISPATCH_JOB_CONTENT_RETENTION_DAYS`` or with the job's last Failed Send row.
    """

    __tablename__ = "job_contents"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    job: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


class Suppression(Base):
    """An address not to send to through MSC: per owner, or ``*`` for the whole operator."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("owner", "address", name="uq_suppression_owner_address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    address: Mapped[str] = mapped_column(String(320), index=True)
    reason: Mapped[str] = mapped_column(String(200), default="")
    source_job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """A calling service's API key; only a SHA-256 hash of the key is kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    scopes: Mapped[str] = mapped_column(String(200), default="send,read")
    #: None: the key acts for every owner; else only for this one (its jobs, state, Failed Sends)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Account(Base):
    """An owner's connected Gmail account or custom SMTP server; secrets only encrypted."""

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("owner", "channel", name="uq_account_owner_channel"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(24), default="connected")
    #: Gmail: the connected address (the From of every message); SMTP: unused
    address: Mapped[str | None] = mapped_column(String(320), nullable=True)
    client_id: Mapped[str | None] = mapped_column(String(300), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    security: Mapped[str | None] = mapped_column(String(16), nullable=True)
    username: Mapped[str | None] = mapped_column(String(320), nullable=True)
    ca_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: SMTP: how it logs in, ``password`` (NULL: rows from before 0010) or ``xoauth2``
    auth: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: SMTP with XOAUTH2: whose OAuth grant (``microsoft`` | ``google``)
    provider: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: Fernet token of the JSON secrets (refresh token, client secret, password)
    secret: Mapped[str] = mapped_column(Text)
    #: bumped whenever the credentials change, so a stale failure cannot flag new credentials
    revision: Mapped[int] = mapped_column(Integer, default=1)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SendingDomain(Base):
    """An owner's sending domain: its DKIM keys (private halves only encrypted), the DNS records
    to publish and whether they were found (worker/domains/)."""

    __tablename__ = "sending_domains"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    domain: Mapped[str] = mapped_column(String(253), unique=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    #: pending (never verified), verified, failed (verified once, a record is gone since)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    selector: Mapped[str] = mapped_column(String(63))
    ed25519_public: Mapped[str] = mapped_column(Text)
    rsa_public: Mapped[str] = mapped_column(Text)
    #: Fernet token of the JSON private keys
    secret: Mapped[str] = mapped_column(Text)
    #: JSON {record name: state} of the last check
    checks: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SenderAddress(Base):
    """A single address an owner sends as on MSC, confirmed through a link mailed to it."""

    __tablename__ = "sender_addresses"
    __table_args__ = (UniqueConstraint("owner", "address", name="uq_sender_owner_address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    address: Mapped[str] = mapped_column(String(320))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ChannelPreference(Base):
    """The channel an owner's jobs take when they name none (``msc`` when there is no row)."""

    __tablename__ = "channel_preferences"

    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookEndpoint(Base):
    """A URL that receives an owner's events (every owner's: ``owner`` NULL), signed with its
    own secret (Standard Webhooks), stored only encrypted."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    url: Mapped[str] = mapped_column(String(2000))
    #: the event types it receives (JSON list); NULL: every type
    events: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    #: Fernet token of the signing secret (``whsec_…``)
    secret: Mapped[str] = mapped_column(Text)
    #: enabled | disabled (failing for MAILDISPATCH_WEBHOOK_DISABLE_AFTER, or removed)
    state: Mapped[str] = mapped_column(String(16), default="enabled")
    disabled_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MessageRecord(Base):
    """A job's outcome, kept for ``MAILDISPATCH_HISTORY_DAYS`` after Redis' copy has expired
    (worker/history/): its state hash as ``maildispatch status`` shows it, and what to find it by.
    """

    __tablename__ = "message_history"
    __table_args__ = (Index("ix_message_history_owner_id", "owner", "id"),)

    #: the listing's order and cursor: rows in the order their outcome was first recorded
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), unique=True)
    owner: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    job_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: the job's state hash (strings, as in Redis), for GET /v1/messages/{id} and `status`
    status: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    #: when the outcome was first recorded (``since`` filters on it; the purge too)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    #: the state hash's ``updated_at``: an older snapshot never overwrites a newer one
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MessageRecipient(Base):
    """One recipient of a job of the history (every one any of its events named)."""

    __tablename__ = "message_history_recipients"
    __table_args__ = (
        Index("ix_message_history_recipients_owner_address", "owner", func.lower(text("address"))),
    )

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    #: as the job spelled it; found whatever its case
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
