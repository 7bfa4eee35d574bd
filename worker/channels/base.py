"""The one small interface every delivery channel implements, with the policy it carries.

A channel is given a built message, its envelope and the owner's account, and either returns a
:class:`Receipt` or raises :class:`TransientError` / :class:`PermanentError`. It knows nothing
about Celery or job state; what the rest of maildispatch needs to know about it is on its class:
whether it owns the return path (bounces come back to maildispatch: Failed Sends, suppressions),
its retry policy, and the scopes its sends are paced by. Whether it sends through an account the
owner connects is in its line of config/channels.py, which producers read too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from config.retry import RetryPolicy
    from config.settings import Settings
    from producers.job import SendJob
    from worker.message.dkim import DkimKey

from config.limits import Rate
from worker.errors import DeliveryError, PermanentError, TransientError

__all__ = [
    "DeliveryChannel",
    "DeliveryError",
    "Envelope",
    "MessageOptions",
    "OutgoingMessage",
    "PermanentError",
    "Receipt",
    "TransientError",
]


@dataclass(frozen=True)
class Envelope:
    """SMTP envelope: the return path and every recipient (to, cc and bcc).

    ``senders``, when given, is one return path per recipient (parallel to ``rcpt_to``): the
    channel then sends one transaction per recipient, each with its own envelope sender.
    """

    mail_from: str
    rcpt_to: tuple[str, ...]
    senders: tuple[str, ...] = ()


@dataclass(frozen=True)
class Receipt:
    """What the server answered to an accepted message.

    ``refused`` maps recipients the server refused (while accepting others) to the error.
    """

    reply_code: int | None
    text: str
    provider_id: str | None = None
    refused: dict[str, DeliveryError] = field(default_factory=dict)


@dataclass(frozen=True)
class OutgoingMessage:
    """A built message: its bytes, plus the From actually used (channels may rewrite it)."""

    data: bytes
    from_address: str
    message_id: str


@dataclass(frozen=True)
class MessageOptions:
    """How a channel wants its messages built: From override, Sender, envelope sender, DKIM."""

    mail_from: str
    domain: str
    sender: str | None = None
    from_address: str | None = None
    #: the keys that sign it (worker.message.dkim.DkimKey): the operator's, or a verified
    #: sending domain's two (RSA and Ed25519)
    dkim_keys: tuple[DkimKey, ...] = ()
    #: a return path per recipient (VERP): set by channels whose bounces must be bound to the
    #: recipient they were issued for (see docs/decisions.md)
    return_path_for: Callable[[str], str] | None = None

    def envelope(self, recipients: tuple[str, ...]) -> Envelope:
        """The envelope for these recipients (one return path each when the channel asks)."""
        senders = tuple(map(self.return_path_for, recipients)) if self.return_path_for else ()
        return Envelope(mail_from=self.mail_from, rcpt_to=recipients, senders=senders)


#: a paced scope ("domain:gmail.com", "gmail:<address>"...) and its rates
Scope = tuple[str, tuple[Rate, ...]]
#: the scopes one send counts against: (job, account, recipients) -> scopes
ScopeRule = Callable[["SendJob", Any, Sequence[str]], list[Scope]]


class DeliveryChannel(Protocol):
    """A way to deliver a built message, and the policy that goes with it."""

    name: ClassVar[str]
    #: does this channel own the return path (so bounces come back to maildispatch)?
    owns_return_path: ClassVar[bool]

    @classmethod
    def retry_policy(cls, settings: Settings) -> RetryPolicy:
        """How long to wait after a transient failure, and when to give up (config/retry.py)."""
        ...

    @classmethod
    def pacing(cls, settings: Settings) -> ScopeRule | None:
        """The fleet-wide limits of its sends (worker/jobs/pacing.py), or None: not paced."""
        ...

    def message_options(self, job: SendJob, account: Any) -> MessageOptions:
        """How to build this job's message for this channel (and the account, if any)."""
        ...

    async def deliver(self, message: OutgoingMessage, envelope: Envelope, account: Any) -> Receipt:
        """Deliver or raise a DeliveryError."""
        ...

    async def close(self) -> None:
        """Close pooled connections."""
        ...
