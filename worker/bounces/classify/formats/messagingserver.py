"""The MessagingServer format: decode an Oracle (Sun, iPlanet) Messaging Server report."""

from __future__ import annotations

from .. import codes
from ..dsn import field, split_original
from ..hosts import is_email_address, is_ipv4
from ..model import Message, Rising
from ..text import aligned, select, sweep
from .base import Records
from .registry import register


@register("MessagingServer", order=160)
def messagingserver(msg: Message) -> Rising | None:
    """Decode an Oracle (Sun, iPlanet) Messaging Server report."""
    if not (
        "Boundary_(ID_" in msg.header("content-type")
        or msg.header("subject").startswith("Delivery Notification: ")
    ):
        return None
    former, latter = split_original(
        msg.payload, ("Content-Type: message/rfc822", "\nReturn-Path: ")
    )
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith(
                "This report relates to a message you sent with the following header fields:"
            )
            continue
        if not line:
            continue
        rec = recs.cur
        if aligned(line, ("  Recipient address: ", "@", ".")) or aligned(
            line, ("  Original address: ", "@", ".")
        ):
            addr = select(line, ": ", None, 16)
            if not is_email_address(addr):
                continue
            if rec.recipient and addr != rec.recipient:
                rec = recs.push()
            rec.recipient = addr
            recs.count += 1
        elif line.startswith("  Date: "):
            rec.date = select(line, "Date: ", None, 1)
        elif line.startswith("  Reason: "):
            rec.date = select(line, " Reason: ", None, 1)
        elif line.startswith("  Diagnostic code: "):
            parsed = field(line.strip(" ").replace("Diagnostic code:", "Diagnostic-Code:", 1))
            if not parsed:
                continue
            rec.spec = parsed[1]
            rec.reply_code = codes.find_reply(parsed[2])
            rec.status = codes.find_status(parsed[2], rec.reply_code)
            rec.diagnosis += " " + parsed[2]
        elif line.startswith("  Remote system: "):
            rec.rhost = select(line, ";", " (")
            if not rec.rhost:
                continue
            parts = select(line, " (", ")").split("|")
            if len(parts) == 5 and parts[0] == "TCP" and rec.rhost.find(".") <= 0:
                if is_ipv4(parts[1]):
                    rec.lhost = parts[1]
                if is_ipv4(parts[3]):
                    rec.rhost = parts[3]
        elif line.startswith("Status: "):
            rec.status = rec.status or codes.find_status(line, rec.reply_code)
            rec.diagnosis = rec.diagnosis or select(line, "(", ")", 1)
        elif line.startswith("Arrival-Date: "):
            rec.date = rec.date or select(line, "-Date: ", None, 1)
        elif line.startswith("Reporting-MTA: ") and rec.lhost.find(".") <= 0:
            parsed = field(line)
            if parsed:
                rec.lhost = parsed[2]
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        if "Illegal host/domain name found" in rec.diagnosis:
            rec.reason = "hostunknown"
    return Rising(records=recs.items, rfc822=latter)
