"""SMTP replies and aiosmtplib's exceptions as maildispatch's errors (worker/channels/smtperrors.py).

What a user sees in Failed Sends and what the retry policy does follow from these: 4xx retried,
5xx recorded, the enhanced status and the server's "try again in N" kept, a wrong password an
``auth`` failure, a TLS or protocol problem a ``config`` one.
"""

from __future__ import annotations

import ssl

import aiosmtplib
import pytest

from worker.channels.smtperrors import from_reply, translate
from worker.channels.smtptext import NOT_SMTP
from worker.errors import PermanentError, TransientError


@pytest.mark.parametrize(
    ("code", "text", "cls", "status", "retry_after"),
    [
        (550, "5.1.1 <bob@example.org>: user unknown", PermanentError, "5.1.1", None),
        (452, "4.2.2 mailbox full, try again in 10 minutes", TransientError, "4.2.2", 600.0),
        (421, "4.7.0 too many connections, retry after 30 s", TransientError, "4.7.0", 30.0),
        (554, "rejected", PermanentError, None, None),
    ],
)
def test_a_reply_keeps_its_class_status_and_wait(
    code: int, text: str, cls: type, status: str | None, retry_after: float | None
) -> None:
    error = from_reply(code, text, "RCPT")
    assert type(error) is cls
    assert (error.reply_code, error.enhanced_status, error.retry_after) == (
        code,
        status,
        retry_after,
    )
    assert error.command == "RCPT" and error.kind == "rejected"


def test_server_text_is_quoted_as_printable_ascii() -> None:
    error = from_reply(550, "5.7.1 blocked\x1b[31m\x00 here")
    assert error.text.isprintable() and error.text.isascii()
    assert "blocked" in error.text and "here" in error.text


def test_a_wrong_password_is_an_auth_failure_and_a_454_is_retried() -> None:
    wrong = translate(aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials"))
    assert isinstance(wrong, PermanentError) and wrong.kind == "auth"
    assert wrong.enhanced_status == "5.7.8"
    later = translate(aiosmtplib.SMTPAuthenticationError(454, "4.7.0 try later"))
    assert isinstance(later, TransientError) and later.kind != "auth"


def test_the_refused_command_is_named() -> None:
    sender = translate(aiosmtplib.SMTPSenderRefused(553, "5.1.8 bad sender", "a@example.com"))
    assert (sender.command, sender.reply_code) == ("MAIL", 553)
    data = translate(aiosmtplib.SMTPDataError(554, "5.6.0 content rejected"))
    assert (data.command, type(data)) == ("DATA", PermanentError)
    refused = aiosmtplib.SMTPRecipientRefused(450, "4.2.0 greylisted", "b@example.org")
    rcpt = translate(aiosmtplib.SMTPRecipientsRefused([refused]))
    assert (rcpt.command, type(rcpt)) == ("RCPT", TransientError)


def test_a_peer_that_is_not_smtp_is_a_config_failure() -> None:
    error = translate(aiosmtplib.SMTPConnectResponseError(220, "+OK POP3 ready"))
    assert isinstance(error, PermanentError) and error.kind == "config" and error.text == NOT_SMTP
    bogus = translate(aiosmtplib.SMTPResponseException(999, "HTTP/1.1 400 Bad Request"))
    assert bogus.text == NOT_SMTP


def test_tls_that_cannot_be_trusted_is_never_retried() -> None:
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert.verify_message = "self-signed certificate"
    error = translate(cert)
    assert isinstance(error, PermanentError) and error.kind == "config"
    assert "self-signed" in error.text
    no_tls = translate(aiosmtplib.SMTPException("SMTP STARTTLS extension not supported by server"))
    assert isinstance(no_tls, PermanentError) and no_tls.kind == "config"


@pytest.mark.parametrize(
    "exc",
    [
        aiosmtplib.SMTPTimeoutError("timed out"),
        TimeoutError(),
        ConnectionRefusedError(111, "refused"),
        aiosmtplib.SMTPServerDisconnected("gone"),
    ],
)
def test_network_trouble_is_retried(exc: BaseException) -> None:
    assert isinstance(translate(exc), TransientError)


def test_what_is_not_a_delivery_error_is_raised_again() -> None:
    with pytest.raises(KeyError):
        translate(KeyError("a bug"))
