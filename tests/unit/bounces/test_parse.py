"""The bounce parser on saved messages written for these tests (tests/data/bounces)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.bounces.classify.parse import BounceReport, parse_bounce

DATA = Path(__file__).resolve().parents[2] / "data" / "bounces"


def parse(name: str) -> BounceReport:
    return parse_bounce((DATA / name).read_bytes())


def test_standard_dsn_user_unknown() -> None:
    report = parse("dsn-userunknown.eml")
    assert report.kind == "bounce"
    [bounce] = report.bounces
    assert bounce.recipient == "nobody@example.org"
    assert (bounce.action, bounce.status, bounce.reply_code) == ("failed", "5.1.1", "550")
    assert bounce.reason == "userunknown"
    assert bounce.hard is True
    assert "User unknown in virtual mailbox table" in bounce.diagnostic
    assert bounce.as_json() == {
        "recipient": "nobody@example.org",
        "action": "failed",
        "status": "5.1.1",
        "reply_code": "550",
        "reason": "userunknown",
        "hard": True,
        "diagnostic": bounce.diagnostic,
    }


def test_original_message_headers_keep_their_case() -> None:
    report = parse("dsn-userunknown.eml")
    assert report.original_message_id == "job-42.1@example.com"
    assert report.original_headers["Subject"] == "Your March newsletter"
    assert report.original_headers["From"] == "Example Shop <news@example.com>"
    assert report.original_headers["X-Maildispatch-Job"] == "9b2f6d0e-8c1a-4c55-9d0b-2f1c4e7a9e01"


def test_envelope_recipients_carry_the_return_path_token() -> None:
    report = parse("dsn-userunknown.eml")
    # To:, Delivered-To: and the Received: "for" clause name the same address once, lower-cased
    assert report.envelope_recipients == ("b+tok1.abcdef@bounce.example.com",)


def test_multi_recipient_dsn_keeps_order_and_reasons() -> None:
    report = parse("dsn-multi.eml")
    rows = [(b.recipient, b.status, b.reply_code, b.reason, b.hard) for b in report.bounces]
    assert rows == [
        ("alice@example.net", "5.1.1", "550", "userunknown", True),
        ("bob@example.net", "5.2.2", "552", "mailboxfull", False),
    ]


def test_delayed_dsn_is_a_delay_not_a_failure() -> None:
    report = parse("dsn-delayed.eml")
    assert report.kind == "delay"
    assert [b.action for b in report.bounces] == ["delayed"]
    assert not [b for b in report.bounces if b.action == "failed"]
    assert report.bounces[0].hard is False


def test_arf_abuse_report_is_feedback() -> None:
    report = parse("arf-abuse.eml")
    assert report.kind == "feedback"
    assert report.feedback_type == "abuse"
    [row] = report.bounces
    assert (row.recipient, row.reason, row.status, row.action, row.hard) == (
        "complainer@isp.example.net",
        "feedback",
        "",
        "",
        False,
    )


def test_vacation_reply_is_an_autoreply() -> None:
    report = parse("vacation.eml")
    assert report.kind == "autoreply"
    [row] = report.bounces
    assert (row.recipient, row.reason, row.hard, row.status) == (
        "carol@example.org",
        "vacation",
        False,
        "",
    )


@pytest.mark.parametrize(
    ("name", "recipient", "status", "reason", "hard"),
    [
        ("qmail.eml", "gone@example.info", "5.1.1", "userunknown", True),
        ("exim.eml", "full@example.co", "5.2.2", "mailboxfull", False),
        ("exchange-ndr.eml", "missing@contoso.example", "5.1.1", "userunknown", True),
    ],
)
def test_non_standard_mta_texts(
    name: str, recipient: str, status: str, reason: str, hard: bool
) -> None:
    report = parse(name)
    assert report.kind == "bounce"
    [row] = report.bounces
    assert (row.recipient, row.status, row.reason, row.hard) == (recipient, status, reason, hard)


def test_a_dsn_quoted_in_the_returned_message_is_ignored() -> None:
    report = parse("fake-dsn-in-original.eml")
    assert [b.recipient for b in report.bounces] == ["real@example.org"]
    [row] = report.bounces
    assert (row.status, row.reply_code, row.reason, row.hard) == (
        "5.7.1",
        "554",
        "policyviolation",
        False,
    )


def test_not_a_report_yields_no_bounce() -> None:
    raw = b"From: friend@example.org\r\nTo: b+x@bounce.example.com\r\nSubject: hello\r\n\r\nJust saying hi.\r\n"
    report = parse_bounce(raw)
    assert report.bounces == ()
    assert report.kind == "unknown"
    assert report.envelope_recipients == ("b+x@bounce.example.com",)


def test_garbage_does_not_raise() -> None:
    for raw in (b"", b"\x00\xff\xfe", b"no header here", b"Subject: x\n\n--b\n--b--"):
        assert parse_bounce(raw).bounces == ()


def test_a_final_expiry_reads_as_a_failure() -> None:
    # the MTA gave up (Action: failed, 4.4.7): a failure, whatever Sisimai calls expiries
    report = parse("dsn-expired.eml")
    assert report.kind == "bounce"
    assert [(b.action, b.reason) for b in report.bounces] == [("failed", "expired")]


def test_a_delay_warning_without_an_action_is_not_a_failure() -> None:
    # Exim's "Delivery attempts will continue" warning gives a 4.x.x and no Action: mail still
    # being retried must not become a Failed Send (the final bounce may follow, or delivery)
    report = parse("exim-delay-warning.eml")
    assert report.bounces and all(b.status.startswith("4") for b in report.bounces)
    assert {b.action for b in report.bounces} == {"delayed"}
