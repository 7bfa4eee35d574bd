"""The quoted original of a report: the part that quotes our message, nothing of the reporter's."""

from __future__ import annotations

import time

from worker.bounces.classify.quoted import quoted_original

HEAD = b'From: fbl@isp.example\r\nContent-Type: multipart/report; boundary="b1"\r\n\r\n'


def part(content_type: bytes, body: bytes, boundary: bytes = b"b1") -> bytes:
    return b"--" + boundary + b"\r\nContent-Type: " + content_type + b"\r\n\r\n" + body + b"\r\n"


def test_the_quoted_part_ends_at_its_enclosing_boundary() -> None:
    raw = (
        HEAD
        + part(b"text/plain", b"Content-Type: message/rfc822\r\nnot a part: body text")
        + part(b"message/rfc822", b"Return-Path: <ours>\r\n\r\nHello")
        + part(b"text/plain", b"after the original")
        + b"--b1--\r\n"
    )
    quoted = quoted_original(raw)
    assert quoted is not None
    assert quoted.startswith(b"Content-Type: message/rfc822\r\n\r\nReturn-Path: <ours>")
    assert b"after the original" not in quoted and b"not a part" not in quoted


def test_own_headers_and_plain_text_reports() -> None:
    own = b"X-Note: x\r\nContent-Type: message/rfc822\r\n\r\nno parts here"
    assert quoted_original(own) is None
    plain = b"Subject: report\r\n\r\nnotice\r\n----- Original message -----\r\nReturn-Path: <x>"
    assert quoted_original(plain) == b"----- Original message -----\r\nReturn-Path: <x>"


def test_linear_in_lines_that_look_like_quoted_parts() -> None:
    line = b"Content-Type: message/rfc822\r\n" + b"x" * 40 + b"\r\n\r\n"
    small, big = HEAD + line * 2_000, HEAD + line * 40_000  # 2 MiB of look-alikes
    start = time.perf_counter()
    assert quoted_original(small) is None
    t_small = time.perf_counter() - start
    start = time.perf_counter()
    assert quoted_original(big) is None
    assert time.perf_counter() - start < max(1.0, t_small * 20 * 5)
