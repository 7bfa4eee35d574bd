"""The MailFoundry format: decode a MailFoundry ``Message delivery has failed`` report."""

from __future__ import annotations

from ..dsn import split_original
from ..model import Message, Rising
from ..text import select, sweep
from .base import Records
from .registry import register


@register("MailFoundry", order=260)
def mailfoundry(msg: Message) -> Rising | None:
    """Decode a MailFoundry ``Message delivery has failed`` report."""
    if msg.header("subject") != "Message delivery has failed":
        return None
    if not any("(MAILFOUNDRY) id" in r for r in msg.headers.get("received", [])):
        return None
    former, latter = split_original(msg.payload, ("Content-Type: message/rfc822",))
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("Unable to deliver message to:")
        if not cursor or not line:
            continue
        if line.startswith("Unable to deliver message to: <") and line.find("@") > 0:
            recs.add(select(line, ": <", ">"))
        elif line == "Delivery failed for the following reason:":
            recs.cur.diagnosis = line
        elif recs.cur.diagnosis and not line.startswith("-"):
            recs.cur.diagnosis += " " + line
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
