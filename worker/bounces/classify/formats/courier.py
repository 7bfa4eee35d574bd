"""The Courier format: decode a Courier MTA delivery status notification."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..model import Message, Rising
from ..text import contains_any, first_reason, sweep
from .base import RFC822_PARTS, DsnFields, Records
from .registry import register


@register("Courier", order=150)
def courier(msg: Message) -> Rising | None:
    """Decode a Courier MTA delivery status notification."""
    if not (
        "Courier mail server at " in msg.header("from")
        or "NOTICE: mail delivery status." in msg.header("subject")
        or "WARNING: delayed mail." in msg.header("subject")
        or msg.header("message-id").startswith("<courier.")
    ):
        return None
    former, latter = split_original(msg.payload, RFC822_PARTS)
    recs = Records()
    dsn = DsnFields()
    thecommand = ""
    cursor = False
    previous = ""
    for line in former.split("\n"):
        before, previous = previous, line
        if not cursor:
            cursor = contains_any(line, ("DELAYS IN DELIVERING YOUR MESSAGE", "UNDELIVERABLE MAIL"))
            continue
        if not line or dsn.feed(line, recs):
            continue
        if line.startswith(">>> "):
            thecommand = codes.find_command(line)
        elif before.startswith("Diagnostic-Code:") and line.startswith(" "):
            recs.cur.diagnosis += " " + sweep(line)
    if not recs.count:
        return None
    dsn.spread(recs)
    table = (
        ("hostunknown", ("No such domain.",)),
        ("systemerror", ("This domain's DNS violates RFC 1035.",)),
        ("networkerror", ("DNS lookup failed.",)),
    )
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.command = thecommand
        rec.reason = first_reason(table, rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
