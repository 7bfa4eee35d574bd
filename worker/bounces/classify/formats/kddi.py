"""The KDDI format: decode an au by KDDI (dion.ne.jp, auone-net.jp) bounce."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..hosts import is_email_address
from ..model import Message, Rising
from ..text import contains_any, first_reason, select, sweep
from .base import Records
from .registry import register


@register("KDDI", order=60)
def kddi(msg: Message) -> Rising | None:
    """Decode an au by KDDI (dion.ne.jp, auone-net.jp) bounce."""
    ok = contains_any(msg.header("from"), ("no-reply@.", ".dion.ne.jp"))
    ok = ok or "no-reply@app.auone-net.jp" in msg.header("reply-to")
    ok = ok or any(
        "ezweb.ne.jp (" in r or ".au.com (" in r for r in msg.headers.get("received", [])
    )
    if not ok:
        return None
    former, latter = split_original(msg.payload, ("Content-Type: message/rfc822",))
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("Your mail sent on:")
        if not cursor or not line:
            continue
        if " Could not be delivered to: <" in line:
            rec = recs.push()
            addr = select(line, ": <", ">", 16)
            if is_email_address(addr):
                rec.recipient = addr
                recs.count += 1
        elif "Your mail sent on: " in line:
            recs.cur.date = line[19:]
        elif line.startswith(" "):
            recs.cur.diagnosis += line + " "
    if not recs.count:
        return None
    table = (
        ("mailboxfull", ("As their mailbox is full",)),
        ("norelaying", ("Due to the following SMTP relay error",)),
        ("hostunknown", ("As the remote domain doesnt exist",)),
    )
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.command = codes.find_command(rec.diagnosis)
        if msg.header("x-spasign") == "NG":
            rec.reason = "filtered"
        elif rec.command == "RCPT":
            rec.reason = "userunkonwn"
        else:
            rec.reason = first_reason(table, rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
