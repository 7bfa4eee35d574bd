"""The parser's time is linear in the size of a report, whatever its shape (issue #14 item 2).

Pathological reports of ~5 MiB (many folded header lines, one huge folded header, many MIME
parts, long lines, many recipients...) are parsed within a CPU time bound proportional to their
size; and a fuzz test mutates the saved reports of the corpus: a mutation never raises and never
takes long.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.bounces.classify.parse import parse_bounce

REPO = Path(__file__).resolve().parents[3]
SIZE = 5 * 1024 * 1024
#: CPU seconds allowed per MiB (and a constant for the fixed costs): the quadratic unfolding
#: took ~15 s for 4 MiB; a linear parser takes well under a second for 5 MiB
PER_MIB = 0.6
FIXED = 1.0

HEAD = (
    b"From: MAILER-DAEMON@mx.example.net\r\nTo: b+abc@bounces.example\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\r\n'
)
DSN = (
    b"--BB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n"
    b"\r\n"
)
RECIPIENT = (
    b"Final-Recipient: rfc822; a@b.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n"
)


def _fill(prefix: bytes, unit: bytes, suffix: bytes = b"\r\n\r\nbody\r\n") -> bytes:
    return prefix + unit * ((SIZE - len(prefix)) // len(unit)) + suffix


SHAPES: dict[str, Callable[[], bytes]] = {
    "many folded lines": lambda: _fill(HEAD + b"X-Folded: a\r\n", b" b\r\n"),
    "one huge folded received": lambda: _fill(
        HEAD + b"Received: from x.example\r\n", b"\tby y.example with esmtp id q\r\n"
    ),
    "many headers": lambda: _fill(HEAD, b"X-Header: value\r\n"),
    "many received": lambda: _fill(HEAD, b"Received: from a.example by b.example; x\r\n"),
    "many to addresses": lambda: _fill(HEAD + b"To: a@b.example", b", c@d.example"),
    "many mime parts": lambda: _fill(
        HEAD + b"\r\n", b"--BB\r\nContent-Type: text/plain\r\n\r\nhello\r\n", b"--BB--\r\n"
    ),
    "long line": lambda: _fill(HEAD + b"\r\n--BB\r\nContent-Type: text/plain\r\n\r\n", b"x"),
    "many recipients": lambda: _fill(HEAD + b"\r\n" + DSN, RECIPIENT, b"--BB--\r\n"),
    "folded diagnostic": lambda: _fill(
        HEAD + b"\r\n" + DSN + RECIPIENT.rstrip(b"\r\n") + b"\r\n", b"  more text\r\n"
    ),
    "content-type parameters": lambda: _fill(
        HEAD + b"\r\n--BB\r\nContent-Type: text/plain;\r\n", b'    charset="utf-8"\r\n'
    ),
    "feedback report lines": lambda: _fill(
        HEAD.replace(b"delivery-status", b"feedback-report")
        + b"\r\n--BB\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report\r\n",
        b"abuse text\r\n",
    ),
    "nested multiparts": lambda: _fill(
        HEAD + b"\r\n", b'--BB\r\nContent-Type: multipart/mixed; boundary="BB"\r\n\r\n'
    ),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_pathological_report_is_parsed_in_time_proportional_to_its_size(shape: str) -> None:
    raw = SHAPES[shape]()
    assert len(raw) >= SIZE * 0.9
    started = time.process_time()
    parse_bounce(raw)
    elapsed = time.process_time() - started
    bound = FIXED + PER_MIB * len(raw) / 2**20
    assert elapsed < bound, f"{shape}: {elapsed:.2f}s CPU for {len(raw)} bytes (bound {bound:.1f}s)"


def _corpus() -> list[bytes]:
    folders = [
        REPO / "tests" / "data" / "bounces",
        REPO.parent / "shared" / "bounce-corpus" / "dev",
    ]
    folders.append(Path("/work/shared/bounce-corpus/dev"))
    files = sorted({p.name: p for f in folders if f.is_dir() for p in f.glob("*.eml")}.values())
    return [p.read_bytes() for p in files]


CORPUS = _corpus()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        kind = draw(st.sampled_from(["insert", "delete", "repeat", "flip"]))
        if kind == "insert":
            raw[at:at] = draw(st.binary(max_size=64))
        elif kind == "delete":
            del raw[at : at + draw(st.integers(1, 512))]
        elif kind == "repeat":  # a line (or any slice) repeated many times: the quadratic cases
            end = raw.find(b"\n", at) + 1 or len(raw)
            piece = bytes(raw[at:end])[:200] or b" x\r\n"
            raw[at:at] = piece * draw(st.integers(1, 20_000))
        elif at < len(raw):
            raw[at] = draw(st.integers(0, 255))
    return bytes(raw)


@settings(
    max_examples=150,
    deadline=3000,  # ms: no mutation takes long
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
@given(mutated())
def test_mutated_corpus_reports_never_raise_nor_take_long(raw: bytes) -> None:
    started = time.process_time()
    report = parse_bounce(raw)
    assert time.process_time() - started < FIXED + PER_MIB * len(raw) / 2**20
    assert isinstance(report.bounces, tuple)
