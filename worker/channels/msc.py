"""MSC: the operator's own relay servers. We own the return path, so every bounce comes back.

``From`` is the sender's identity; ``Sender`` is at the operator's domain, whose key signs the
message (DKIM); the envelope sender is a signed return-path token at the bounce domain, one per
recipient: a job to several recipients is sent as one transaction per recipient (as VERP senders
do), so that a bounce or complaint can only affect the recipient it was issued for.

An identity at a sending domain its owner verified (worker/domains/) is sent as that domain
instead: signed with the domain's own keys (RSA and Ed25519), its return path at the domain's
``bounces.`` subdomain (a CNAME to the bounce domain, so bounces still come here), no
``Sender``: SPF and DKIM align with From, DMARC passes, and mail clients show no "via".
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

from config.limits import parse_keyed_rates
from config.retry import RetryPolicy, settings_policy
from config.settings import Settings
from producers.job import SendJob
from worker.channels.base import (
    Envelope,
    MessageOptions,
    OutgoingMessage,
    Receipt,
    Scope,
    ScopeRule,
)
from worker.channels.smtppool import SmtpPool, SmtpServer
from worker.domains.signing import VerifiedDomains
from worker.errors import DeliveryError, TransientError
from worker.message.dkim import DkimKey
from worker.message.returnpath import return_path


class MscChannel:
    """Delivers through a pool of connections to each of the operator's relays, with failover."""

    name: ClassVar[str] = "msc"
    owns_return_path: ClassVar[bool] = True

    @classmethod
    def retry_policy(cls, settings: Settings) -> RetryPolicy:
        """``MAILDISPATCH_MSC_RETRY_DELAYS`` / ``_GIVE_UP_AFTER``."""
        return settings_policy(settings, cls.name)

    @classmethod
    def pacing(cls, settings: Settings) -> ScopeRule | None:
        """Per destination domain (``MAILDISPATCH_MSC_DOMAIN_LIMITS``)."""
        limits = parse_keyed_rates(settings.msc_domain_limits)
        if not limits:
            return None

        def scopes(job: SendJob, account: Any, recipients: Sequence[str]) -> list[Scope]:
            domains = sorted({r.rpartition("@")[2].lower() for r in recipients})
            return [(f"domain:{d}", limits[d]) for d in domains if d in limits]

        return scopes

    def __init__(self, settings: Settings) -> None:
        self.secret_key = settings.require_secret_key()
        self.bounce_domain = settings.bounce_domain
        self.domain = settings.msc_domain
        self.sender = f"{settings.msc_sender_local}@{settings.msc_domain}"
        self.dkim_keys = (
            (
                DkimKey.from_file(
                    settings.dkim_private_key_file, settings.msc_domain, settings.dkim_selector
                ),
            )
            if settings.dkim_private_key_file and settings.dkim_selector
            else ()
        )
        servers = [SmtpServer.from_url(u, settings.smtp_timeout) for u in settings.msc_relays]
        if not servers:
            raise ValueError("MAILDISPATCH_MSC_RELAYS names no relay")
        self.pools = [
            SmtpPool(s, settings.msc_connections_per_relay, local_hostname=settings.msc_domain)
            for s in servers
        ]
        self._next = itertools.cycle(range(len(self.pools)))
        self.domains = VerifiedDomains(settings)
        self.domains.load()

    def message_options(self, job: SendJob, account: Any) -> MessageOptions:
        """Identity in From, operator in Sender, a recipient's return-path token as envelope
        sender; at a verified domain, that domain's keys and return path and no Sender."""
        own = self.domains.for_identity(job.owner, job.identity.address)
        bounce_domain = own.return_domain if own else self.bounce_domain
        return MessageOptions(
            mail_from=return_path(job.id, self.secret_key, bounce_domain, job.recipients[0]),
            domain=own.domain if own else self.domain,
            sender=None if own else self.sender,
            dkim_keys=own.keys if own else self.dkim_keys,
            return_path_for=functools.partial(return_path, job.id, self.secret_key, bounce_domain),
        )

    async def deliver(self, message: OutgoingMessage, envelope: Envelope, account: Any) -> Receipt:
        """One transaction per recipient when the envelope has a return path for each."""
        if not envelope.senders or len(envelope.rcpt_to) == 1:
            sender = envelope.senders[0] if envelope.senders else envelope.mail_from
            return await self._send(Envelope(sender, envelope.rcpt_to), message.data)
        outcomes = await asyncio.gather(
            *(
                self._send(Envelope(sender, (rcpt,)), message.data)
                for sender, rcpt in zip(envelope.senders, envelope.rcpt_to, strict=True)
            ),
            return_exceptions=True,
        )
        return merge(envelope.rcpt_to, outcomes)

    async def _send(self, envelope: Envelope, data: bytes) -> Receipt:
        """Send through the next relay; a relay that cannot be reached fails over to the next."""
        start = next(self._next)
        last: TransientError | None = None
        for i in range(len(self.pools)):
            pool = self.pools[(start + i) % len(self.pools)]
            try:
                return await pool.send(envelope, data)
            except TransientError as exc:
                if exc.reply_code is not None:  # the relay answered: do not try it elsewhere
                    raise
                last = exc
        assert last is not None
        raise last

    async def close(self) -> None:
        """Close every relay's connections; stop reading the verified domains."""
        self.domains.close()
        for pool in self.pools:
            await pool.close()


def merge(recipients: tuple[str, ...], outcomes: list[Receipt | BaseException]) -> Receipt:
    """One receipt for the job from its per-recipient transactions.

    As for one transaction, a job none of whose recipients was accepted raises the error when
    every transaction failed the same way (all transient: the job is retried as a whole);
    otherwise each recipient keeps its own answer in ``refused``.
    """
    refused: dict[str, DeliveryError] = {}
    accepted: list[Receipt] = []
    errors: list[DeliveryError] = []
    for rcpt, outcome in zip(recipients, outcomes, strict=True):
        if isinstance(outcome, DeliveryError):
            errors.append(outcome)
            refused[rcpt] = outcome
        elif isinstance(outcome, BaseException):
            raise outcome  # a bug, or a cancellation: not a delivery outcome
        else:
            refused.update(outcome.refused)
            if rcpt not in outcome.refused:
                accepted.append(outcome)
    same = errors and all(type(e) is type(errors[0]) for e in errors)
    if (
        not accepted
        and len(errors) == len(recipients)
        and same
        and (isinstance(errors[0], TransientError) or len({e.text for e in errors}) == 1)
    ):
        raise errors[0]
    first = accepted[0] if accepted else None
    return Receipt(
        reply_code=first.reply_code if first else None,
        text=first.text if first else "all recipients refused",
        provider_id=first.provider_id if first else None,
        refused=refused,
    )
