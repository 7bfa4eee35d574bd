"""The IMailServer format: decode an Ipswitch/Progress IMail Server ``Undeliverable Mail`` report."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..hosts import find_address
from ..model import Message, Rising
from ..text import FIELD_MAX, aligned, first_reason, sweep
from .base import Records
from .registry import register


@register("IMailServer", order=230)
def imailserver(msg: Message) -> Rising | None:
    """Decode an Ipswitch/Progress IMail Server ``Undeliverable Mail`` report."""
    if not (
        msg.header("subject").startswith("Undeliverable Mail ")
        or msg.header("x-mailer").startswith("<SMTP32 v")
    ):
        return None
    former, latter = split_original(msg.payload, ("Original message follows.",))
    recs = Records()
    buffer: list[str] = []
    for line in former.split("\n"):
        if (line.find(": ") > 8 and aligned(line, (": ", "@"))) or line.startswith(
            "undeliverable "
        ):
            rec = recs.add(find_address(line))
            rec.diagnosis = line
        elif "Body of message generated response:" in line or buffer:
            buffer.append(line)
    if not recs.count:
        return None
    table = (
        ("hostunknown", ("Unknown host",)),
        ("userunknown", ("Unknown user", "Invalid final delivery userid")),
        ("mailboxfull", ("User mailbox exceeds allowed size",)),
        ("virusdetected", ("Requested action not taken: virus detected",)),
        ("spamdetected", ("Blacklisted URL in message",)),
        ("expired", ("Delivery failed ",)),
    )
    alternates = " ".join(buffer)[:FIELD_MAX]  # added to every record: bounded
    for rec in recs.items:
        rec.diagnosis = sweep((alternates + " " + rec.diagnosis).replace("\n", " "))
        rec.command = codes.find_command(rec.diagnosis)
        rec.reason = first_reason(table, rec.diagnosis)
    if "\nFrom: " not in latter:
        latter = "From: " + msg.header("to") + "\n" + latter + "\n"
    if "\nTo: " not in latter:
        latter = "To: " + recs.items[0].recipient + "\n" + latter + "\n"
    return Rising(records=recs.items, rfc822=latter)
