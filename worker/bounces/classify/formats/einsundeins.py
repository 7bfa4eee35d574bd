"""The EinsUndEins format: decode a 1&1 (1und1) bounce."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..hosts import find_address, is_email_address
from ..model import Message, Rising
from ..text import aligned, select, sweep
from .base import Records
from .registry import register


@register("EinsUndEins", order=320)
def einsundeins(msg: Message) -> Rising | None:
    """Decode a 1&1 (1und1) bounce."""
    if not msg.header("from").startswith('"Mail Delivery System"'):
        return None
    if msg.header("subject") != "Mail delivery failed: returning message to sender":
        return None
    former, latter = split_original(
        msg.payload, ("--- The header of the original message is following. ---",)
    )
    recs = Records()
    extra: list[str] = []
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith(
                "This message was created automatically by mail delivery software"
            )
            continue
        if not line:
            continue
        if aligned(line, ("@", ".")) and (line.endswith(":") or " " not in line):
            addr = find_address(line.strip(":"))
            if is_email_address(addr):
                recs.add(addr)
        elif line.startswith("For the following reason:"):
            recs.cur.diagnosis = line
        elif recs.cur.diagnosis:
            recs.cur.diagnosis += " " + line
        else:
            extra.append(" " + line)
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = rec.diagnosis or "".join(extra)
        rec.command = codes.find_command(rec.diagnosis)
        if aligned(rec.diagnosis, ("host: ", " reason:")):
            rec.rhost = sweep(select(rec.diagnosis, "host: ", " "))
            rec.status = codes.find_status(rec.diagnosis)
            if "for TEXT command" in rec.diagnosis:
                rec.command = "DATA"
            if "SMTP error" in rec.diagnosis:
                rec.spec = "SMTP"
        rec.diagnosis = sweep(rec.diagnosis)
        if "Mail size limit exceeded" in rec.diagnosis:
            rec.reason = "mesgtoobig"
    return Rising(records=recs.items, rfc822=latter)
