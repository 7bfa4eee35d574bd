"""The text fallback: a failure report no decoder reads still gives its failed recipients,
classified from the text around them and marked ``fallback``; challenge/response mails,
out-of-office notes and a person's mail give none (tests/data/bounces-fallback/); and the last
rule before ``onhold``: a reply that names spam and nothing more is ``spamdetected``."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.bounces.classify.parse import parse_bounce

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "bounces-fallback"


@pytest.mark.parametrize(
    ("sample", "recipient", "status", "reason", "hard"),
    [
        # Sendmail's transcript without a DSN part: the RCPT refusal in the session
        ("sendmail-transcript.eml", "jdoe@example.edu", "5.0.911", "userunknown", True),
        # an Exim listing with the address alone in angle brackets
        ("exim-brackets.eml", "nobody@example.net", "5.1.1", "userunknown", True),
        # a DSN whose Final-Recipient is folded onto a second line
        ("folded-fr.eml", "kijitora@example.com", "5.1.1", "userunknown", True),
        # the sentence leading in to the address, not the lines after it, says it failed
        ("failed-following.eml", "gone.person@example.net", "5.0.901", "onhold", False),
        # quoted headers of the original are skipped; an unknown user without a command named
        # is refused at RCPT, not filtered after DATA
        ("quoted-headers.eml", "unknown.name@example.com", "5.0.911", "userunknown", True),
        # the returned original is gone and the notice names no sender: still a failure
        ("no-sender.eml", "nobody.here@example.com", "5.1.1", "userunknown", True),
        # in quotes; "not collected after 30 days": an expiry that is final
        ("not-collected.eml", "away.user@example.uk", "5.0.947", "expired", False),
    ],
)
def test_a_report_no_decoder_reads_still_names_its_failed_recipient(
    sample: str, recipient: str, status: str, reason: str, hard: bool
) -> None:
    report = parse_bounce((SAMPLES / sample).read_bytes())
    assert report.decoder == "fallback" and report.kind == "bounce"
    (bounce,) = report.bounces
    assert (bounce.recipient, bounce.action, bounce.status, bounce.reason, bounce.hard) == (
        recipient,
        "failed",
        status,
        reason,
        hard,
    )
    assert recipient in bounce.diagnostic  # the text it was found in


@pytest.mark.parametrize(
    "sample",
    [
        "challenge-response.eml",
        "challenge-undeliverable.eml",  # says "undeliverable" and "rejected": still a challenge
        "guest-list-dsn.eml",  # a DSN with Action: failed around a guest-list challenge
        "server-confirmation.eml",  # "550 Your server requires confirmation": the server's
        "out-of-office.eml",
        "personal-mail.eml",
    ],
)
def test_what_is_no_failure_gives_no_failed_recipient(sample: str) -> None:
    report = parse_bounce((SAMPLES / sample).read_bytes())
    assert not [b for b in report.bounces if b.action == "failed"], report


@pytest.mark.parametrize(
    "diagnostic",
    [
        "550 5.9.8 Spam",
        "550 Rejected by header based Anti-Spoofing policy: Spam Signature detected",
    ],
)
def test_a_reply_that_only_names_spam_is_spamdetected(diagnostic: str) -> None:
    raw = (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: sender@example.org\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n"
        "\r\nFinal-Recipient: rfc822; kitty@example.com\r\nAction: failed\r\nStatus: 5.0.0\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n\r\n--B--\r\n"
    )
    (bounce,) = parse_bounce(raw.encode()).bounces
    assert bounce.reason == "spamdetected", bounce.why


@pytest.mark.parametrize(
    ("sample", "recipients"),
    [
        ("lead-in-list.eml", ["first.user@example.com", "second.user@example.com"]),
        # in Chinese: "the mail could not be sent to the address you gave" above the addresses,
        # nothing else
        ("cjk-webmail.eml", ["wang.li@example.cn", "zhang.wei@example.cn"]),
    ],
)
def test_every_recipient_after_a_lead_in_sentence_is_failed(
    sample: str, recipients: list[str]
) -> None:
    report = parse_bounce((SAMPLES / sample).read_bytes())
    assert report.decoder == "fallback"
    assert [(b.recipient, b.action) for b in report.bounces] == [(r, "failed") for r in recipients]


def test_a_dsn_whose_final_recipient_is_no_address_names_the_original_recipient() -> None:
    (bounce,) = parse_bounce((SAMPLES / "local-final-recipient.eml").read_bytes()).bounces
    assert (bounce.recipient, bounce.action, bounce.reason) == (
        "full.box@example.net",
        "failed",
        "mailboxfull",
    )


def test_a_warning_no_decoder_reads_is_a_delay_not_a_failure() -> None:
    report = parse_bounce((SAMPLES / "retrying.eml").read_bytes())
    assert [(b.recipient, b.action) for b in report.bounces] == [
        ("slow.host@example.org", "delayed")
    ]
    assert report.kind == "delay"


def test_a_challenge_wrapped_in_a_dsn_with_action_failed_is_no_failure() -> None:
    report = parse_bounce((SAMPLES / "guest-list-dsn.eml").read_bytes())
    assert report.bounces == () and report.decoder == "challenge"


def test_a_rejection_that_names_an_allowlist_is_still_a_failure() -> None:
    # nothing is asked of the sender, and the mail did not arrive: not a challenge
    (bounce,) = parse_bounce((SAMPLES / "allowlist-rejection.eml").read_bytes()).bounces
    assert (bounce.recipient, bounce.action, bounce.hard) == ("boss@example.com", "failed", False)


def test_an_address_at_a_short_domain_is_still_an_address() -> None:
    # reports anonymised to "user@b.c" (and real three-character hosts) keep their recipient
    raw = (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: sender@example.org\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n"
        "\r\nFinal-Recipient: rfc822; fred@b.c\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--B--\r\n"
    )
    (bounce,) = parse_bounce(raw.encode()).bounces
    assert (bounce.recipient, bounce.reason) == ("fred@b.c", "userunknown")
