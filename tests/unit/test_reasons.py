"""Send-time rejections get the same reason names and hard rule as bounces."""

from __future__ import annotations

import pytest

from worker.failures.send_reasons import is_hard, plain_words, reason_for


@pytest.mark.parametrize(
    ("code", "status", "text", "reason", "hard"),
    [
        (550, "5.1.1", "<a@b.c>: Recipient address rejected: User unknown", "userunknown", True),
        (554, "5.7.1", "Client host [192.0.2.1] blocked using zen.spamhaus.org", "blocked", False),
        (552, "5.2.2", "Mailbox full", "mailboxfull", False),
        (550, None, "No such user here", "userunknown", True),
        (
            550,
            "5.7.26",
            "Unauthenticated email is not accepted due to domain's DMARC policy",
            "authfailure",
            False,
        ),
    ],
)
def test_reason_and_hard_flag(
    code: int, status: str | None, text: str, reason: str, hard: bool
) -> None:
    assert reason_for(code, status, text, "rejected", "RCPT") == reason
    assert is_hard(code, status, text, "RCPT") is hard


def test_kinds_that_name_their_reason() -> None:
    assert reason_for(451, "4.3.0", "try later", "expired") == "expired"
    assert reason_for(None, None, "", "suppressed") == "suppressed"


def test_plain_words() -> None:
    assert plain_words("userunknown", "5.1.1") == "Mailbox does not exist (5.1.1)"


def test_describe_does_not_repeat_the_enhanced_status() -> None:
    from worker.errors import PermanentError

    error = PermanentError("5.1.1 <a@b.c>: User unknown", reply_code=550, enhanced_status="5.1.1")
    assert error.describe() == "550 5.1.1 <a@b.c>: User unknown"
    bare = PermanentError("User unknown", reply_code=550, enhanced_status="5.1.1")
    assert bare.describe() == "550 5.1.1 User unknown"
