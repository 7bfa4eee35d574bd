"""The X1 format: decode bounces of unidentified MTA #1 (``The original message was received at``)."""

from __future__ import annotations

from ..dsn import split_original
from ..hosts import is_email_address
from ..model import Message, Rising
from ..text import aligned, select
from .base import RFC822_PARTS, Records
from .registry import register


@register("X1", order=340)
def x1(msg: Message) -> Rising | None:
    """Decode bounces of unidentified MTA #1 (``The original message was received at``)."""
    subject = msg.header("subject")
    if not (
        subject.startswith(("Returned Mail: ", "Mail Delivery Failure"))
        or aligned(msg.header("from"), ('"Mail Deliver', 'System" '))
    ):
        return None
    former, latter = split_original(msg.payload, (RFC822_PARTS[0], "Received: from "))
    if not former:
        return None
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("The original message was received at ")
        if not cursor or not line:
            continue
        if aligned(line, ("@", " [", "]")):
            rec = recs.push()
            addr = select(line, None, " ")
            if not is_email_address(addr):
                continue
            rec.recipient = addr
            rec.diagnosis += " " + line
            recs.count += 1
        else:
            rec = recs.cur
            if line.startswith("---") and line.endswith("---"):
                line = line.strip("-") + ":"
                rec.diagnosis += "."
            rec.diagnosis += " " + line
    if not recs.count:
        return None
    for rec in recs.items:
        rec.date = rec.date or select(rec.diagnosis, " at ", "from").strip(" ")
    return Rising(records=recs.items, rfc822=latter)
