"""A report over the size limit is queued with its quoted original cut, or refused."""

from __future__ import annotations

from worker.bounces.classify.truncate import TRUNCATED_HEADER, truncate

NOTICE = b"From: MAILER-DAEMON@x\r\nSubject: failure\r\n\r\nUser unknown: a@b.example\r\n"
ORIGINAL = b"Content-Type: message/rfc822\r\n\r\nReturn-Path: <b+tok@bounces.example>\r\n\r\n"


def test_small_reports_are_untouched() -> None:
    raw = NOTICE + ORIGINAL + b"body\r\n"
    assert truncate(raw, 4096) == raw


def test_the_quoted_original_is_cut_and_the_report_kept() -> None:
    raw = NOTICE + ORIGINAL + b"x" * 70 + b"\r\n" * 1 + (b"y" * 76 + b"\r\n") * 100_000
    cut = truncate(raw, 64 * 1024)
    assert cut is not None and len(cut) <= 64 * 1024
    assert cut.startswith(TRUNCATED_HEADER + b": %d\r\n" % len(raw))
    assert NOTICE + ORIGINAL in cut and cut.endswith(b"\n")


def test_a_report_whose_own_part_is_too_big_is_refused() -> None:
    raw = NOTICE + b"z" * 100_000 + ORIGINAL
    assert truncate(raw, 64 * 1024) is None
    assert truncate(NOTICE + b"q" * 100_000, 64 * 1024) is None
