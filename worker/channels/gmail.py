"""Gmail: the owner's connected Google account, through the Gmail API ``users.messages.send``.

``From`` is always the connected address, with the identity's display name: Gmail sends as the
account it is authorised for, so the recipient sees that account whatever identity was chosen
(the job records ``from_replaced``). Bounces return to the user's inbox, so this channel has no
return path of ours, no suppression list and no bounce ingest.

OAuth2 access tokens come from the refresh token kept encrypted in the accounts store, through
``MAILDISPATCH_GOOGLE_TOKEN_URI``, cached per account in this worker process
(worker/accounts/oauth.py; Google lets several access tokens live side by side).

Google's answers are translated to our errors in :func:`translate` only:

- 401 on send: the token is refreshed once and the send retried; a second 401 is ``auth``
- token endpoint ``invalid_grant``: PermanentError ``auth`` (account ``needs_reconnect``)
- 429, ``rateLimitExceeded`` / ``userRateLimitExceeded`` ...: TransientError, after the delay
  Google names (``Retry-After``, or "Retry after <time>" in the message)
- 5xx, timeouts, connection errors: TransientError
- any other 4xx: PermanentError with Google's reason and message
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any, ClassVar

import google.auth.exceptions
import httpx
import structlog

from config.limits import parse_rates
from config.retry import RetryPolicy, settings_policy
from config.settings import Settings
from producers.job import SendJob
from worker.accounts.connected import GmailAccount, refresh_token_keeper
from worker.accounts.oauth import AccessTokens, Grant, refresh_error
from worker.channels.base import (
    Envelope,
    MessageOptions,
    OutgoingMessage,
    Receipt,
    Scope,
    ScopeRule,
)
from worker.errors import DeliveryError, PermanentError, TransientError
from worker.failures.kinds import FailedKind

log = structlog.get_logger("maildispatch.gmail")

SEND_PATH = "/gmail/v1/users/me/messages/send"
#: 403/429 reasons that mean "slow down", not "never"
RATE_REASONS = frozenset(
    {
        "rateLimitExceeded",
        "userRateLimitExceeded",
        "dailyLimitExceeded",
        "quotaExceeded",
        "RATE_LIMIT_EXCEEDED",
        "RESOURCE_EXHAUSTED",
    }
)
#: the grant lacks the send permission: the user must connect again and allow it
SCOPE_REASONS = frozenset({"insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"})
#: concurrent sends per account: Gmail answers 429 past a small per-user concurrency
SENDS_PER_ACCOUNT = 4
_RETRY_AT = re.compile(r"retry after (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)", re.I)


class GmailChannel:
    """Sends through the Gmail API as the owner's connected account."""

    name: ClassVar[str] = "gmail"
    owns_return_path: ClassVar[bool] = False

    @classmethod
    def retry_policy(cls, settings: Settings) -> RetryPolicy:
        """``MAILDISPATCH_GMAIL_RETRY_DELAYS`` / ``_GIVE_UP_AFTER``."""
        return settings_policy(settings, cls.name)

    @classmethod
    def pacing(cls, settings: Settings) -> ScopeRule | None:
        """Per connected account (``MAILDISPATCH_GMAIL_LIMITS``)."""
        rates = parse_rates(settings.gmail_limits)
        if not rates:
            return None

        def scopes(job: SendJob, account: Any, recipients: Sequence[str]) -> list[Scope]:
            address = str(getattr(account, "email", "") or job.owner).lower()
            return [(f"gmail:{address}", rates)]

        return scopes

    def __init__(self, settings: Settings) -> None:
        self.send_url = settings.gmail_api_url.rstrip("/") + SEND_PATH
        self.token_uri = settings.google_token_uri
        # the same bound as one SMTP conversation: a send must not hold a job for longer
        self.http = httpx.AsyncClient(timeout=settings.smtp_timeout)
        self.tokens = AccessTokens("Gmail account", refresh_token_keeper(settings, self.name))
        self._sending: dict[tuple[str, int], asyncio.Semaphore] = {}

    def message_options(self, job: SendJob, account: Any) -> MessageOptions:
        """From (and the envelope) is the connected address; Message-ID at its domain."""
        email = _gmail(account).email
        return MessageOptions(mail_from=email, domain=email.rpartition("@")[2], from_address=email)

    async def deliver(self, message: OutgoingMessage, envelope: Envelope, account: Any) -> Receipt:
        """``users.messages.send`` with the raw message; the Gmail message id is the receipt."""
        gmail = _gmail(account)
        token = self.tokens.get(gmail.owner, gmail.revision, self._grant(gmail))
        body = {"raw": base64.urlsafe_b64encode(with_bcc(message.data, envelope)).decode()}
        sending = self._sending.setdefault(
            (gmail.owner, gmail.revision), asyncio.Semaphore(SENDS_PER_ACCOUNT)
        )
        if len(self._sending) > 10_000:
            self._sending.clear()
        try:
            async with sending:
                access = await token.get()
                response = await self._post(body, access)
                if response.status_code == 401:  # revoked or expired early: refresh, retry once
                    log.info("gmail_token_rejected")
                    token.reject(access)
                    response = await self._post(body, await token.get())
        except Exception as exc:
            raise translate(exc) from exc
        if not response.is_success:
            raise translate(response)
        try:
            data = response.json()
            gmail_id, thread = str(data["id"]), str(data.get("threadId", ""))
        except (ValueError, KeyError, TypeError):
            # Gmail accepted the message (2xx); an odd body must not make us send it again
            return Receipt(reply_code=None, text=f"accepted by Gmail (HTTP {response.status_code})")
        return Receipt(
            reply_code=None,
            text=f"accepted by Gmail: id {gmail_id} thread {thread}",
            provider_id=gmail_id,
        )

    async def _post(self, body: dict[str, str], access: str) -> httpx.Response:
        return await self.http.post(
            self.send_url, json=body, headers={"Authorization": f"Bearer {access}"}
        )

    def _grant(self, account: GmailAccount) -> Grant:
        return Grant(
            "google",
            self.token_uri,
            account.client_id,
            account.client_secret,
            account.refresh_token,
        )

    async def close(self) -> None:
        """Close the HTTP clients."""
        await self.http.aclose()
        self.tokens.close()


def _gmail(account: Any) -> GmailAccount:
    if not isinstance(account, GmailAccount):
        raise PermanentError("no Gmail account is connected for this owner", kind=FailedKind.CONFIG)
    return account


def with_bcc(data: bytes, envelope: Envelope) -> bytes:
    """The message with a ``Bcc`` header for envelope-only recipients.

    Gmail takes recipients from the headers, not an envelope, and removes ``Bcc`` before it
    delivers; the built message never has a ``Bcc`` header of its own.
    """
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    parsed = BytesHeaderParser(policy=compat32).parsebytes(head)
    shown = {
        addr.lower()
        for _, addr in getaddresses([*parsed.get_all("To", []), *parsed.get_all("Cc", [])])
    }
    hidden = [r for r in envelope.rcpt_to if r.lower() not in shown]
    if not hidden:
        return data
    folded = ",\r\n ".join(hidden)  # one address a line: no header line over 998 octets
    return f"Bcc: {folded}\r\n".encode() + data


def translate(failure: httpx.Response | BaseException) -> DeliveryError:
    """Google's answer (or a transport failure) as TransientError or PermanentError."""
    if isinstance(failure, DeliveryError):  # the token holder's, already ours
        return failure
    if isinstance(failure, google.auth.exceptions.RefreshError):
        return refresh_error(failure, "Gmail account", "Google")
    if isinstance(failure, google.auth.exceptions.TransportError):
        return TransientError(f"cannot reach Google's token endpoint: {failure}")
    if isinstance(failure, httpx.TransportError):
        return TransientError(f"Gmail API unreachable: {type(failure).__name__}: {failure}")
    if isinstance(failure, BaseException):
        raise failure
    status = failure.status_code
    reason, message = _google_error(failure)
    text = f"Gmail API {status} {reason}: {message}".replace(" :", ":")[:1000]
    if status == 429 or reason in RATE_REASONS:
        return TransientError(text, retry_after=_retry_after(failure, message))
    if status >= 500:
        return TransientError(text, retry_after=_retry_after(failure, message))
    if status == 401:
        return PermanentError(
            f"Google refused a freshly refreshed access token ({text}); reconnect the Gmail "
            "account",
            kind=FailedKind.AUTH,
        )
    if reason in SCOPE_REASONS:
        return PermanentError(
            f"the Gmail account did not grant permission to send ({text}); reconnect it and "
            "allow sending",
            kind=FailedKind.AUTH,
        )
    return PermanentError(text, kind=FailedKind.REJECTED)


def _google_error(response: httpx.Response) -> tuple[str, str]:
    """(reason, message) of a Google JSON error body; tolerant of anything else."""
    try:
        error = response.json().get("error", {})
    except ValueError:
        return "", response.text[:300].strip()
    if not isinstance(error, dict):
        return str(error)[:100], ""
    details = error.get("errors") or [{}]
    reason = str(details[0].get("reason") or error.get("status") or "")
    return reason[:100], str(error.get("message") or "")[:500]


def _retry_after(response: httpx.Response, message: str) -> float | None:
    """Seconds Google asks us to wait: ``Retry-After`` (seconds or a date), or its message."""
    header = response.headers.get("Retry-After", "").strip()
    when: datetime | None = None
    if header.isdigit():
        return float(header)
    if header:
        try:
            when = parsedate_to_datetime(header)
        except (TypeError, ValueError):
            when = None
    if when is None and (match := _RETRY_AT.search(message)):
        when = datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
