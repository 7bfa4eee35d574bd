"""Delivery errors.

DeliveryError
├── TransientError    try again later: SMTP 4xx, 421, dropped connection, timeout, HTTP 429/5xx
└── PermanentError    never retry: SMTP 5xx, bad address, revoked grant, suppressed
ConfigurationError    not a DeliveryError, so nothing swallows it by accident (config.settings)

Each channel translates its library's exceptions into these in exactly one function.
"""

from __future__ import annotations

from config.errors import MaildispatchError
from config.settings import ConfigurationError
from worker.failures.kinds import FailedKind

__all__ = ["ConfigurationError", "DeliveryError", "PermanentError", "TransientError"]


class DeliveryError(MaildispatchError):
    """A delivery attempt failed; carries what the server said, when it said anything."""

    #: Failed Sends kind when this error ends the job
    kind: FailedKind = FailedKind.REJECTED

    def __init__(
        self,
        text: str,
        *,
        reply_code: int | None = None,
        enhanced_status: str | None = None,
        kind: FailedKind | None = None,
        retry_after: float | None = None,
        command: str | None = None,
    ) -> None:
        super().__init__(text)
        self.text = text
        self.reply_code = reply_code
        self.enhanced_status = enhanced_status
        self.retry_after = retry_after
        #: the SMTP command answered (MAIL, RCPT, DATA), when known: it changes the reason
        self.command = command
        if kind:
            self.kind = kind

    def describe(self) -> str:
        """``550 5.1.1 text``: the reply as a person reads it."""
        status = self.enhanced_status or ""
        if status and self.text.startswith(status):
            status = ""  # servers usually start their text with the enhanced status already
        parts = [str(self.reply_code) if self.reply_code else "", status, self.text]
        return " ".join(p for p in parts if p)


class TransientError(DeliveryError):
    """Try again later."""


class PermanentError(DeliveryError):
    """Never retry; record the failure."""
