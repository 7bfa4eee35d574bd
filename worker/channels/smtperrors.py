"""SMTP replies and aiosmtplib's exceptions as our errors: the one place that knows SMTP reply
codes. 4xx is transient, 5xx permanent; an enhanced status code (RFC 3463) and a "try again in
N seconds" are kept; server text is quoted only from a parsed reply, as printable ASCII."""

from __future__ import annotations

import asyncio
import re
import ssl

import aiosmtplib

from worker.channels.smtptext import NOT_SMTP, is_reply_code, printable
from worker.errors import DeliveryError, PermanentError, TransientError
from worker.failures.kinds import FailedKind

_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
_RETRY_AFTER = re.compile(
    r"(?:try again|retry)\D{0,20}(\d{1,6})\s*(s|sec|seconds?|m|min|minutes?)\b", re.I
)
_NO_AUTH = re.compile(r"AUTH extension is not supported|No suitable authentication method")


def _status(message: str) -> str | None:
    match = _ENHANCED.match(message)
    return match.group(1) if match else None


def _retry_after(message: str) -> float | None:
    match = _RETRY_AFTER.search(message)
    if not match:
        return None
    return float(match.group(1)) * (60.0 if match.group(2).lower().startswith("m") else 1.0)


def _too_many(code: int, message: str, command: str | None) -> bool:
    """A 552 to RCPT meaning "too many recipients", which RFC 5321 §4.5.3.1.10 says to treat as
    temporary (older servers answer it instead of 452): the recipients past the server's limit
    were not refused, and go in a later transaction. A 552 for a full mailbox stays permanent."""
    return (
        code == 552
        and command == "RCPT"
        and (_status(message) == "5.5.3" or "too many recipients" in message.lower())
    )


def from_reply(code: int, message: str, command: str | None = None) -> DeliveryError:
    """A reply code and text as our error: 4xx transient, 5xx permanent (text: printable ASCII)."""
    message = printable(message)
    cls = (
        TransientError if 400 <= code < 500 or _too_many(code, message, command) else PermanentError
    )
    return cls(
        message,
        reply_code=code,
        enhanced_status=_status(message),
        retry_after=_retry_after(message),
        command=command,
    )


def translate(exc: BaseException) -> DeliveryError:
    """Map an aiosmtplib / socket / TLS exception to TransientError or PermanentError.

    Server text is quoted only from a parsed SMTP reply, as printable ASCII (``smtptext``); a
    peer whose answer is no SMTP reply (another protocol's banner) gets a generic text.
    """
    if isinstance(exc, DeliveryError):  # ours already (the address check in netguard)
        return exc
    if isinstance(exc, aiosmtplib.SMTPResponseException) and (
        not is_reply_code(exc.code)
        or (isinstance(exc, aiosmtplib.SMTPConnectResponseError) and exc.code < 400)
    ):
        return PermanentError(NOT_SMTP, kind=FailedKind.CONFIG)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError) and 400 <= exc.code < 500:
        # 454 4.7.0 "temporary authentication failure": the server's trouble, not the password
        return TransientError(
            f"authentication deferred: {printable(exc.message)}",
            reply_code=exc.code,
            enhanced_status=_status(exc.message),
        )
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return PermanentError(
            f"authentication failed: {printable(exc.message)}",
            reply_code=exc.code,
            enhanced_status=_status(exc.message),
            kind=FailedKind.AUTH,
        )
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return from_reply(exc.code, exc.message, "MAIL")
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return from_reply(exc.code, exc.message, "DATA")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return from_reply(exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        first = exc.recipients[0] if exc.recipients else None
        if first is None:
            return TransientError("all recipients refused")
        return from_reply(first.code, first.message, "RCPT")
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return PermanentError(
            f"server does not support what is needed: {printable(str(exc))}", kind=FailedKind.CONFIG
        )
    if isinstance(exc, aiosmtplib.SMTPException) and "does not support XOAUTH2" in str(exc):
        # an OAuth grant for a server that takes passwords only: the server setting is wrong
        return PermanentError(
            "cannot log in: the server does not offer AUTH XOAUTH2 (OAuth); check the host, "
            "or set the account with a password",
            kind=FailedKind.CONFIG,
        )
    if isinstance(exc, aiosmtplib.SMTPException) and _NO_AUTH.search(str(exc)):
        # no AUTH offered (e.g. before TLS) or no common mechanism: the account's settings
        return PermanentError(f"cannot log in: {printable(str(exc))}", kind=FailedKind.AUTH)
    if isinstance(exc, aiosmtplib.SMTPException) and "STARTTLS extension" in str(exc):
        # never fall back to plain text: a missing STARTTLS may be a downgrade attack
        return PermanentError(
            f"server does not offer STARTTLS: {printable(str(exc))}", kind=FailedKind.CONFIG
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentError(
            f"TLS certificate not trusted: {exc.verify_message}", kind=FailedKind.CONFIG
        )
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError | TimeoutError):
        return TransientError(f"timed out: {printable(str(exc))}")
    if isinstance(exc, aiosmtplib.SMTPException | OSError | ssl.SSLError | ConnectionError):
        return TransientError(f"connection failed: {printable(str(exc))}")
    raise exc
