"""The X3 format: decode bounces of unidentified MTA #3 (``Delivery status notification`` with details)."""

from __future__ import annotations

from .. import codes
from ..dsn import apply_field, field, match, split_original
from ..model import FIELD_MEMBER, Message, Rising
from ..text import aligned, select, sweep
from .base import RFC822_PARTS, DsnFields, Records
from .registry import register


@register("X3", order=350)
def x3(msg: Message) -> Rising | None:
    """Decode bounces of unidentified MTA #3 (``Delivery status notification`` with details)."""
    if not msg.header("from").startswith("Mail Delivery System"):
        return None
    if not msg.header("subject").startswith("Delivery status notification"):
        return None
    former, latter = split_original(msg.payload, (RFC822_PARTS[0],))
    recs = Records()
    dsn = DsnFields()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith(
                "      This is an automatically generated Delivery Status Notification."
            )
            continue
        if not line:
            continue
        if aligned(line, ("  * ", "@", ".")):
            recs.add(select(line, "  * ", None))
        elif line.startswith("SMTP:"):
            rec = recs.cur
            rec.command = codes.find_command(line[4:10])
            rec.spec = "SMTP"
            rec.diagnosis += " " + line
        elif line.startswith("Routing: "):
            recs.cur.diagnosis += " " + line
        else:
            kind = match(line)
            parsed = field(line) if kind else []
            if not parsed:
                continue
            rec = recs.cur
            if parsed[3] == "addr":
                if parsed[0] != "final-recipient":
                    rec.alias = parsed[2]
                elif rec.recipient != parsed[2]:
                    recs.add(parsed[2])
            elif parsed[3] == "code":
                rec.spec = parsed[1]
                rec.diagnosis += " " + parsed[2]
            else:
                apply_field(rec, parsed)
                if kind == 1:
                    member = FIELD_MEMBER.get(parsed[0], parsed[0])
                    dsn.permessage[member] = parsed[2]
                    if member not in dsn.keys:
                        dsn.keys.append(member)
    if not recs.count:
        return None
    dsn.spread(recs)
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
