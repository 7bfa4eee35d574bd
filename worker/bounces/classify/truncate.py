"""Cut a large report to size before queueing it: keep the report, shorten the quoted original.

A bounce or feedback report is a short notice followed by a copy of the message it is about
(``message/rfc822``, ``text/rfc822-headers``, or a quoted ``--- Original message ---``). Only the
notice and the original's headers matter to ingest (the return-path token of a feedback report
is in them), so a report over ``MAILDISPATCH_BOUNCE_MAX_BYTES`` is cut inside its quoted
original rather than refused, as long as the notice itself fits with room for those headers.
"""

from __future__ import annotations

import re

__all__ = ["TRUNCATED_HEADER", "truncate"]

TRUNCATED_HEADER = b"X-Maildispatch-Truncated"
#: room kept after the start of the quoted original for its headers (Return-Path and the token)
ORIGINAL_HEAD_ROOM = 16 * 1024

_ORIGINAL = re.compile(
    rb"(?im)^content-type:[ \t]*(?:message/(?:rfc822|global)|text/rfc822-headers?)"
    rb"|^-{2,} ?(?:original message|this is a copy)"
)


def truncate(raw: bytes, limit: int) -> bytes | None:
    """``raw`` if within ``limit``; else cut inside its quoted original; None if it cannot be."""
    if len(raw) <= limit:
        return raw
    note = TRUNCATED_HEADER + b": %d\r\n" % len(raw)
    budget = limit - len(note)
    found = _ORIGINAL.search(raw, 0, budget)
    if found is None or found.start() + min(ORIGINAL_HEAD_ROOM, budget // 4) > budget:
        return None  # the report itself does not fit: refuse it
    cut = raw.rfind(b"\n", found.end(), budget)
    cut = budget if cut < 0 else cut + 1
    return note + raw[:cut]
