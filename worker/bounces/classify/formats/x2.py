"""The X2 format: decode bounces of unidentified MTA #2 (``Unable to deliver message to the following``)."""

from __future__ import annotations

from ..dsn import split_original
from ..model import Message, Rising
from ..text import aligned, select, startswith_any, sweep
from .base import Records
from .registry import register


@register("X2", order=110)
def x2(msg: Message) -> Rising | None:
    """Decode bounces of unidentified MTA #2 (``Unable to deliver message to the following``)."""
    if not (
        "MAILER-DAEMON@" in msg.header("from")
        or startswith_any(
            msg.header("subject"), ("Delivery failure", "failure delivery", "failed delivery")
        )
    ):
        return None
    former, latter = split_original(msg.payload, ("--- Original message follows.",))
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("Unable to deliver message to the following address")
            continue
        if not line:
            continue
        if line.startswith("<") and aligned(line, ("<", "@", ">:")):
            recs.add(select(line, "<", ">"))
        else:
            recs.cur.diagnosis += " " + line
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
