"""The one typed settings object, built from ``MAILDISPATCH_*`` environment variables (and ``.env``).

``os.environ`` is read here and nowhere else.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.errors import MaildispatchError
from config.limits import parse_keyed_rates, parse_rates
from config.units import parse_duration


class ConfigurationError(MaildispatchError):
    """The deployment is misconfigured (missing key, bad URL); never retried, never swallowed."""

    exit_code = 78  # EX_CONFIG


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _durations(value: object) -> object:
    items = _split_list(value)
    if isinstance(items, list):
        return tuple(parse_duration(i) if isinstance(i, str) else float(i) for i in items)
    return items


def _duration(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


#: the shortest MAILDISPATCH_SECRET_KEY accepted (`make demo` generates a 43-character one)
MIN_SECRET_KEY_BYTES = 32
_KEY_RECIPE = "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"

CommaList = Annotated[tuple[str, ...], NoDecode]
Durations = Annotated[tuple[float, ...], NoDecode]

#: where a user's SMTP server may not be (MAILDISPATCH_SMTP_BLOCKED_NETWORKS): this host and the
#: networks behind it. IPv4-mapped, NAT64 and 6to4 forms of these are blocked with them
#: (worker/channels/netguard.py).
DEFAULT_SMTP_BLOCKED_NETWORKS = (
    "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the local host on Linux
    "127.0.0.0/8",  # loopback
    "10.0.0.0/8",  # RFC 1918
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # RFC 6598 carrier-grade NAT (cloud internal ranges)
    "169.254.0.0/16",  # link-local, cloud metadata services (169.254.169.254)
    "::/128",  # unspecified: the local host too
    "::1/128",  # loopback
    "fe80::/10",  # link-local
    "fec0::/10",  # deprecated site-local
    "fc00::/7",  # unique-local (fd00:ec2::254 is a metadata service)
)


def _networks(value: object) -> object:
    import ipaddress

    items = _split_list(value)
    if isinstance(items, list | tuple):
        try:
            return tuple(str(ipaddress.ip_network(str(i), strict=False)) for i in items)
        except ValueError as exc:
            raise ValueError(f"not a network (use e.g. 10.0.0.0/8 or fd00::/8): {exc}") from None
    return items


class Settings(BaseSettings):
    """Every knob of maildispatch; one frozen instance per process."""

    model_config = SettingsConfigDict(
        env_prefix="MAILDISPATCH_", env_file=".env", extra="ignore", frozen=True
    )

    # Broker and stores
    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str | None = (
        None  # job state, retries, limits; defaults to the broker when it is Redis
    )
    # on a Redis Cluster (redis+cluster://), each write that something irreversible follows (a
    # task acked, a call answered) waits until this many replicas of its master have it (WAIT),
    # at most redis_wait_timeout seconds: a failover then keeps it (README, "Redis in production")
    redis_wait_replicas: int = Field(1, ge=0)
    redis_wait_timeout: float = Field(0.5, gt=0)
    database_url: str = "sqlite:///var/maildispatch.db"
    secret_key: SecretStr | None = None
    previous_secret_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()

    # Batching and reliability
    # 200: Celery's cost per task message spread over more jobs (200 vs 100: ~10% less worker
    # CPU per email, ~30% less producer time publishing; docs/performance.md)
    batch_size: int = Field(200, ge=1, le=1000)
    # Redis redelivers a task not acked within this long: the backstop for a batch reserved by a
    # worker that died before it started it (started ones come back through their lease)
    visibility_timeout: float = 300.0
    job_ttl: float = 7 * 86400.0
    # this machine's name in the fleet (default: its host name): a SQLite store refuses a second
    # host (worker/store/hosts.py)
    host_id: str | None = None
    # how long a job's state stays in Redis once it is final (sent, failed, bounced ...): its
    # status, history and bounce attribution then come from the message history (SQL)
    job_hot_ttl: float = 86400.0
    # where the HTTP API is reached from the Internet (e.g. https://mail.example.com): the base of
    # one-click unsubscribe links; unset, messages carry the mailto form only
    public_url: str | None = None
    # an endpoint failing (no 2xx) for this long is disabled, with the reason in its listing;
    # meanwhile a lane of its events waits these delays after consecutive failures (the last
    # one repeated)
    webhook_disable_after: float = 86400.0
    webhook_retry_delays: Durations = (5.0, 30.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)
    # HTTPS endpoints' certificates are checked against certifi's CA bundle, or this PEM file
    # of CAs instead (an internal CA for receivers inside the company)
    webhook_ca_file: str | None = None
    # how long the event stream (config/events.py: the feed, GET /v1/events) keeps an event
    # (~0.5 KB of Redis each); 0: no events are written
    events_retention: float = 86400.0
    # refuse to start (worker) / report unavailable (/healthz) when Redis is configured to lose
    # data: appendonly off or an evicting maxmemory-policy (producers/redis_safety.py). Off:
    # a loud warning only
    strict_redis: bool = False
    # how long an enqueue waits for another call enqueueing the same idempotency key to publish
    # (or fail) before it gives up with IdempotencyInProgress (HTTP 409)
    idempotency_wait: float = 5.0
    # how long send/send_many keep retrying Redis' and the broker's transient errors (a restart
    # still loading, a reset connection) before they give up: safe, ids and keys stay the same
    enqueue_retry_for: float = 10.0
    # a batch's jobs stay `busy` while its worker renews this lease (every lease/4); then reaped
    claim_lease: float = 60.0
    on_uncertain: Literal["resend", "fail"] = "resend"
    scheduler_interval: float = 0.5
    # A delivery worker process takes up to this many task messages at once and delivers their
    # jobs together on its event loop (worker/consume/stream.py): single sends drain as fast as
    # batches (256: groups of single sends four times as large as with 64, ~12% less worker CPU
    # per email and +26% emails/s in a single-send drain; docs/performance.md)
    worker_prefetch: int = Field(256, ge=1, le=10_000)
    # ... and at most this many of its jobs are between their claim and their outcome at once
    # (worker/consume/gate.py); the others wait, still `queued`, urgent ones (single sends) first
    worker_jobs: int = Field(128, ge=1, le=100_000)
    # ... and while it has 4 or more jobs in delivery, messages arriving are gathered this many
    # seconds before they start as one group (worker/consume/stream.py): single sends that
    # trickle in share their round trips instead of paying them each (20 ms: ~28% less worker
    # CPU per email in a stream of single sends; docs/decisions.md). 0: start at once
    worker_gather: float = Field(0.020, ge=0.0, le=1.0)
    # worker processes `maildispatch worker <channel>` (the Procfile's lines) starts; 0: one per
    # core, as Celery's own default concurrency
    msc_processes: int = Field(0, ge=0, le=1024)
    gmail_processes: int = Field(0, ge=0, le=1024)
    smtp_processes: int = Field(0, ge=0, le=1024)
    # ... and `maildispatch worker events` (the webhook deliverer, 8 threads each)
    events_processes: int = Field(0, ge=0, le=1024)
    #: every worker's main process also runs the scheduler loop (a standalone
    #: ``maildispatch scheduler`` is then optional; several schedulers are safe together)
    embedded_scheduler: bool = True

    # Retention (worker/store/retention.py): Failed Send rows, and the job contents kept for
    # Resend (body, attachments: once per job), are deleted after this many days (0: kept for
    # ever); purged by the scheduler every purge_interval and by `maildispatch failed purge`
    failed_send_retention_days: int = Field(90, ge=0)
    job_content_retention_days: int = Field(30, ge=0)
    # the message history (worker/history/): every job's outcome, written from the event
    # stream by the scheduler in batches, kept this many days (0: no history is written)
    history_days: int = Field(30, ge=0)
    purge_interval: float = 3600.0

    # Limits on what producers may enqueue
    max_message_bytes: int = 10 * 1024 * 1024
    max_recipients: int = 100

    # MSC: the operator's relays
    msc_relays: CommaList = ("smtp://127.0.0.1:2525",)
    msc_domain: str = "mail.maildispatch.invalid"
    msc_sender_local: str = "mailer"
    bounce_domain: str = "bounces.maildispatch.invalid"
    # Inbound bounces (worker/bounces/): SMTP listener, size cap, publish timeout, IMAP password
    bounce_listen: str = "127.0.0.1:2526"
    # the most queued per message: a bigger report is queued with its quoted original cut when
    # its own part fits, else refused (552); bounce-server reads at most bounce_read_max_bytes
    bounce_max_bytes: int = Field(1024 * 1024, ge=1024)
    bounce_read_max_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # feedback-loop (ARF) reports are sent here; None: fbl@<bounce domain>
    bounce_fbl_address: str | None = None
    bounce_max_connections: int = Field(100, ge=1)
    bounce_max_connections_per_peer: int = Field(10, ge=1)
    bounce_max_recipients: int = Field(5, ge=1, le=1000)
    # the ingest task: soft limit (the message goes to the dead-letter store), then hard limit
    bounce_ingest_soft_time_limit: float = 30.0
    bounce_ingest_time_limit: float = 60.0
    bounce_publish_timeout: float = 5.0
    bounce_imap_password: SecretStr | None = None
    # bounce-poll fetches at most this much per message (RFC822.SIZE checked first); a larger
    # one is skipped: flagged \Seen \Flagged, left in the mailbox, noted in the dead letters
    bounce_poll_max_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # PEM certificate (chain) and key: when both are set, bounce-server offers STARTTLS
    bounce_tls_cert: str | None = None
    bounce_tls_key: str | None = None
    dkim_private_key_file: str | None = None
    dkim_selector: str | None = None
    msc_connections_per_relay: int = Field(32, ge=1, le=1000)
    msc_retry_delays: Durations = (30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0)
    msc_give_up_after: float = 4 * 86400.0
    smtp_timeout: float = 60.0

    # Gmail and custom SMTP
    gmail_api_url: str = "https://gmail.googleapis.com"
    google_token_uri: str = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    google_authorize_uri: str = "https://accounts.google.com/o/oauth2/v2/auth"
    # Microsoft 365 (custom SMTP with XOAUTH2): the v2.0 endpoints of the "common" authority
    # take work and school accounts of any tenant; a single-tenant app names its tenant here
    microsoft_token_uri: str = "https://login.microsoftonline.com/common/oauth2/v2.0/token"  # noqa: S105
    microsoft_authorize_uri: str = "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
    # Verified sending domains (worker/domains/): the resolver's servers ("ip:port", else the
    # system's), how often verified domains are checked again, the label of their return path
    dns_nameservers: CommaList = ()
    # MSC refuses (at enqueue) an identity its owner has not verified: a domain (worker/domains/)
    # or an address confirmed through a mailed link; the operator's own domain always passes
    require_verified_identities: bool = False
    domain_recheck_interval: float = 86400.0
    # how soon an MSC worker signs as a domain just verified (or stops, once it failed)
    domain_refresh_interval: float = 30.0
    return_path_label: str = Field("bounces", pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    microsoft_client_id: str | None = None
    microsoft_client_secret: SecretStr | None = None
    # where an OAuth SMTP account of a provider sends when set without --host (host:port,
    # STARTTLS); national clouds differ (GCC High: smtp.office365.us:587)
    microsoft_smtp_server: str = Field("smtp.office365.com:587", pattern=r"^[^\s:]+:\d{1,5}$")
    google_smtp_server: str = Field("smtp.gmail.com:587", pattern=r"^[^\s:]+:\d{1,5}$")
    gmail_retry_delays: Durations = (30.0, 120.0, 600.0, 1800.0, 3600.0)
    gmail_give_up_after: float = 86400.0
    smtp_retry_delays: Durations = (30.0, 120.0, 600.0, 1800.0, 3600.0)
    smtp_give_up_after: float = 86400.0
    # Custom SMTP servers are the users' input: the networks their addresses may not be in
    # (checked on the address each connection goes to), exceptions carved out of them (e.g. an
    # internal relay users may name), and whether AUTH may be sent without TLS (never, unless set)
    smtp_blocked_networks: Annotated[tuple[str, ...], NoDecode] = DEFAULT_SMTP_BLOCKED_NETWORKS
    smtp_allowed_networks: Annotated[tuple[str, ...], NoDecode] = ()
    smtp_allow_plaintext_auth: bool = False

    # Fleet-wide pacing (worker/jobs/pacing.py), "N/period" items: per connected Gmail account,
    # per custom SMTP server (all, or "host=N/period" for one), per MSC destination domain
    gmail_limits: CommaList = ("2000/24h", "150/1m")
    smtp_limits: CommaList = ()
    smtp_server_limits: CommaList = ()
    msc_domain_limits: CommaList = ()

    # HTTP API and Flower
    api_max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)  # larger request bodies get 413
    flower_basic_auth: SecretStr | None = None  # "user:password[,user2:password2]"

    # Logging
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    _lists = field_validator(
        "msc_relays",
        "gmail_limits",
        "smtp_limits",
        "smtp_server_limits",
        "msc_domain_limits",
        "dns_nameservers",
        mode="before",
    )(_split_list)

    @field_validator("gmail_limits", "smtp_limits", mode="after")
    @classmethod
    def _rates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_rates(value)
        return value

    @field_validator("smtp_server_limits", "msc_domain_limits", mode="after")
    @classmethod
    def _keyed_rates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_keyed_rates(value)
        return value

    _delays = field_validator(
        "msc_retry_delays",
        "gmail_retry_delays",
        "smtp_retry_delays",
        "webhook_retry_delays",
        mode="before",
    )(_durations)
    _spans = field_validator(
        "msc_give_up_after",
        "gmail_give_up_after",
        "smtp_give_up_after",
        "job_ttl",
        "job_hot_ttl",
        "events_retention",
        "webhook_disable_after",
        "idempotency_wait",
        "enqueue_retry_for",
        "claim_lease",
        "visibility_timeout",
        "scheduler_interval",
        "smtp_timeout",
        "bounce_publish_timeout",
        "bounce_ingest_soft_time_limit",
        "bounce_ingest_time_limit",
        "purge_interval",
        "domain_recheck_interval",
        "domain_refresh_interval",
        mode="before",
    )(_duration)

    _nets = field_validator("smtp_blocked_networks", "smtp_allowed_networks", mode="before")(
        _networks
    )

    @field_validator("bounce_ingest_time_limit", mode="after")
    @classmethod
    def _ingest_limits(cls, hard: float, info: ValidationInfo) -> float:
        # Celery starts the hard limit's clock only when the soft one ran out, and rounds both to
        # whole seconds (0 means none): a soft limit not below the hard one would move it
        soft = info.data.get("bounce_ingest_soft_time_limit")
        if soft is not None and not 1 <= round(soft) < round(hard):
            raise ValueError(
                "MAILDISPATCH_BOUNCE_INGEST_SOFT_TIME_LIMIT must be at least 1s and below "
                f"MAILDISPATCH_BOUNCE_INGEST_TIME_LIMIT (whole seconds): {soft:g}s, {hard:g}s"
            )
        return hard

    @field_validator("broker_url", mode="after")
    @classmethod
    def _broker_not_a_cluster(cls, value: str) -> str:
        if value.split("://", 1)[0].lower().endswith("+cluster"):
            raise ValueError(
                "a Redis Cluster cannot be the Celery broker (kombu has no cluster transport): "
                "set MAILDISPATCH_BROKER_URL to RabbitMQ (amqp://...) and the cluster as "
                "MAILDISPATCH_REDIS_URL"
            )
        return value

    @field_validator("previous_secret_keys", mode="before")
    @classmethod
    def _previous_keys(cls, value: object) -> object:
        return _split_list(value)

    @property
    def state_redis_url(self) -> str:
        """Where job state, the retry schedule and rate limits live (Redis, whatever the broker)."""
        if self.redis_url:
            return self.redis_url
        if self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            return self.broker_url
        return "redis://127.0.0.1:6379/0"

    @property
    def fbl_address(self) -> str:
        """Where feedback-loop reports are sent (lower-cased)."""
        return (self.bounce_fbl_address or f"fbl@{self.bounce_domain}").strip().lower()

    def require_secret_key(self) -> str:
        """The secret key, or a clear ConfigurationError: there is no built-in default key, and
        a key shorter than MIN_SECRET_KEY_BYTES is refused (it signs return paths that anyone
        may read, and encrypts stored credentials)."""
        if self.secret_key is None or not self.secret_key.get_secret_value().strip():
            raise ConfigurationError(
                "MAILDISPATCH_SECRET_KEY is not set. Generate one with "
                f"{_KEY_RECIPE} and export it; maildispatch has no built-in default key."
            )
        key = self.secret_key.get_secret_value()
        if len(key.encode()) < MIN_SECRET_KEY_BYTES:
            raise ConfigurationError(
                f"MAILDISPATCH_SECRET_KEY is shorter than {MIN_SECRET_KEY_BYTES} bytes. "
                f"Generate one with {_KEY_RECIPE} and export it."
            )
        return key

    def verifying_keys(self) -> list[str]:
        """The secret key, then the previous ones: what a token or a sealed secret made under
        any of them is checked with (a key rotation does not break what was issued before)."""
        return [
            self.require_secret_key(),
            *(k.get_secret_value() for k in self.previous_secret_keys),
        ]


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
