"""The InterScanMSS format: decode a Trend Micro InterScan Messaging Security Suite bounce."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..hosts import find_address, is_email_address
from ..model import Message, Rising
from ..text import select, sweep
from .base import Records
from .registry import register


@register("InterScanMSS", order=50)
def interscanmss(msg: Message) -> Rising | None:
    """Decode a Trend Micro InterScan Messaging Security Suite bounce."""
    if not (
        msg.header("from").startswith('"InterScan')
        or "InterScan" in msg.header("content-type")
        or " InterScan " in msg.payload
    ):
        return None
    former, latter = split_original(msg.payload, ("Content-Type: message/rfc822",))
    recs = Records()
    for line in former.split("\n"):
        if not line:
            continue
        p1, p2 = line.find(" <<< "), line.find(" >>> ")
        if (
            line.find("@") > 1
            and line.find(" <") > 1
            and (p1 > 1 or p2 > 1 or "Unable to deliver " in line)
        ):
            p3, p4 = line.rfind("<"), line.rfind(">")
            addr = find_address(line[p3 : p4 + 1])
            if not is_email_address(addr):
                continue
            rec = recs.cur
            if rec.recipient and rec.recipient not in addr:
                rec = recs.push()
            if "Unable to deliver " in line:
                rec.diagnosis = line
            rec.recipient = addr
            recs.count = len(recs.items)
        rec = recs.cur
        if line.startswith("Sent <<< "):
            rec.command = codes.find_command(line)
        elif line.startswith("Received >>> "):
            rec.diagnosis = select(line, " >>> ", None, 8)
        elif p1 > 0 or p2 > 0:
            if " >>> " in line:
                rec.command = codes.find_command(line)
            if " <<< " in line:
                rec.diagnosis = select(line, "<<<", None, 3)
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        if "Unable to deliver" in rec.diagnosis:
            rec.reason = "userunknown"
    return Rising(records=recs.items, rfc822=latter)
