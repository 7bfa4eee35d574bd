"""The Biglobe format: decode a BIGLOBE bounce (``Returned mail:`` from postmaster@*.biglobe.ne.jp)."""

from __future__ import annotations

from ..dsn import split_original
from ..hosts import is_email_address
from ..model import Message, Rising
from ..text import first_reason, sweep
from .base import Records
from .registry import register


@register("Biglobe", order=310)
def biglobe(msg: Message) -> Rising | None:
    """Decode a BIGLOBE bounce (``Returned mail:`` from postmaster@*.biglobe.ne.jp)."""
    sender = msg.header("from")
    if "postmaster@" not in sender or not msg.header("subject").startswith("Returned mail:"):
        return None
    if not any("@" + p + ".ne.jp" in sender for p in ("biglobe", "inacatv", "tmtv", "ttv")):
        return None
    former, latter = split_original(msg.payload, ("Content-Type: message/rfc822",))
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("   ----- The following addresses had delivery problems -----")
            continue
        if not line:
            continue
        if line.find("@") > 1 and " " not in line:
            if is_email_address(line):
                recs.add(line)
        elif "--" not in line:
            recs.cur.diagnosis += line + " "
    if not recs.count:
        return None
    table = (
        ("filtered", ("Mail Delivery Failed... User unknown",)),
        (
            "mailboxfull",
            ("The number of messages in recipient's mailbox exceeded the local limit.",),
        ),
    )
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.reason = first_reason(table, rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
