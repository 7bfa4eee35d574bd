"""The quoted original of a report: the one place a feedback-loop report's token may come from.

Feedback loops report to their own address, so a report to it is tied to a job only through the
copy of our message it quotes (its ``Return-Path``). Anything else in the report is the
reporter's own text: its headers, its notice, its machine-readable part, parts after the copy.
The copy is a MIME part (``message/rfc822``, ``message/global``, ``text/rfc822-headers``), from
its ``Content-Type`` header to the next delimiter of the multipart that encloses it, or, in a
report that is not MIME, everything after an ``----- Original message -----`` line.

Linear in the size of the report: each candidate looks back at most ``PART_HEAD`` bytes.
"""

from __future__ import annotations

import re

__all__ = ["quoted_original"]

_PART = re.compile(
    rb"(?im)^content-type:[ \t]*(?:message/(?:rfc822|global)|text/rfc822-headers?)\b"
)
_TEXT = re.compile(rb"(?im)^-{2,} ?(?:original message|this is a copy)")
_BLANK = re.compile(rb"\r?\n\r?\n")
#: the most a part's header block may hold before its Content-Type line
PART_HEAD = 4096


def quoted_original(raw: bytes) -> bytes | None:
    """The quoted original message of ``raw`` (None when it quotes none)."""
    end_of_headers = _BLANK.search(raw)
    body = end_of_headers.end() if end_of_headers else len(raw)
    for found in _PART.finditer(raw, body):
        delimiter = _enclosing_delimiter(raw, body, found.start())
        if delimiter is not None:
            end = raw.find(b"\n" + delimiter, found.end())
            return raw[found.start() : end if end >= 0 else len(raw)]
    text = _TEXT.search(raw, body)
    return raw[text.start() :] if text else None


def _enclosing_delimiter(raw: bytes, lo: int, pos: int) -> bytes | None:
    """The ``--boundary`` line whose part headers hold the line at ``pos``; None when that line
    is not in a part's header block (it is body text that looks like a header)."""
    start = raw.rfind(b"\n--", max(lo - 1, pos - PART_HEAD), pos)
    if start < 0:
        return None
    line_end = raw.find(b"\n", start + 1, pos)
    if line_end < 0:
        return None
    delimiter = raw[start + 1 : line_end].rstrip()
    if len(delimiter) < 3:
        return None  # "--" alone names no boundary
    if _BLANK.search(raw[line_end:pos]):
        return None  # a blank line between: the line at pos is in a part's body
    return delimiter
