"""The X6 format: decode bounces of unidentified MTA #6 (``There was an error sending your mail``)."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..hosts import find_address, find_host, is_email_address
from ..model import Message, Rising
from ..text import sweep
from .base import Records
from .registry import register


@register("X6", order=360)
def x6(msg: Message) -> Rising | None:
    """Decode bounces of unidentified MTA #6 (``There was an error sending your mail``)."""
    if not msg.header("subject").startswith("There was an error sending your mail"):
        return None
    former, latter = split_original(
        msg.payload, ("The attachment contains the original mail headers",)
    )
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("We had trouble delivering your message. Full details follow:")
        if not cursor or not line:
            continue
        p1 = line.find("The following recipients returned permanent errors: ")
        p2 = line.find("SMTP Server <")
        if p1 == 0 or p2 == 0:
            p3 = line.find(": ") if p1 == 0 else line.rfind(" <")
            addr = find_address(line[p3:])
            if not is_email_address(addr):
                continue
            rec = recs.add(addr)
            rec.diagnosis += " " + line
        elif line.startswith("Date: "):
            recs.cur.date = line[6:].strip("'")
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.command = codes.find_command(rec.diagnosis)
        rec.rhost = find_host(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
