"""The MailMarshalSMTP format: decode a Trustwave MailMarshal ``Undeliverable Mail`` report."""

from __future__ import annotations

from ..dsn import split_original
from ..mime import boundary
from ..model import Message, Rising
from ..text import contains_any, select, sweep
from .base import Records
from .registry import register


@register("MailMarshalSMTP", order=280)
def mailmarshalsmtp(msg: Message) -> Rising | None:
    """Decode a Trustwave MailMarshal ``Undeliverable Mail`` report."""
    if not msg.header("subject").startswith('Undeliverable Mail: "'):
        return None
    cuts = ["'+++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++"]
    end = boundary(msg.header("content-type"), 1)
    if end:
        cuts.append(end)
    former, latter = split_original(msg.payload, cuts)
    recs = Records()
    cursor = endoferror = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("Your message:")
        if not cursor:
            continue
        rec = recs.cur
        if line.startswith("    ") and line.find("@") > 0:
            recs.add(line[4:])
        elif line == "Could not be delivered because of":
            rec.diagnosis = line
        elif rec.diagnosis and not endoferror:
            if line.startswith("The following recipients were affected:"):
                endoferror = True
                continue
            rec.diagnosis += " " + line
        elif line.startswith("Original Sender: "):
            latter += "From: " + select(line, "<", ">") + "\n"
        elif line.startswith("Sender-MTA: "):
            rec.lhost = select(line, "<", ">")
        elif line.startswith("Reporting-MTA: "):
            rec.rhost = select(line, "<", ">")
        elif contains_any(line, (" From:", " Subject:")):
            p1 = line.find(" From:")
            if p1 < 0:
                p1 = line.find(" Subject:")
            p2 = line.find(":")
            latter += line[p1 + 1 : p2] + ": " + sweep(line[p2 + 1 :]) + "\n"
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
