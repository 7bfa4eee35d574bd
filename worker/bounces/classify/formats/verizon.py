"""The Verizon format: decode a Verizon Wireless (vtext.com) bounce."""

from __future__ import annotations

from ..dsn import split_original
from ..hosts import find_address
from ..model import Message, Record, Rising
from ..text import aligned, contains_any, select, sweep
from .registry import register


@register("Verizon", order=80)
def verizon(msg: Message) -> Rising | None:
    """Decode a Verizon Wireless (vtext.com) bounce."""
    sender = msg.header("from")
    if "post_master@vtext.com" not in sender and not aligned(sender, ("sysadmin@", ".vzwpix.com")):
        return None
    payload = msg.payload
    nooriginal = "Message details:" in payload
    if nooriginal:
        payload = payload.replace("Sent date: ", "Date: ", 1).replace(
            "MAIL FROM: ", "Return-Path: ", 1
        )
        payload = payload.replace("RCPT TO: ", "To: ", 1)
    former, latter = split_original(payload, ("Original Message:", "Message details:"))
    rec = Record()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("Error: ")
        if cursor and line:
            rec.diagnosis += line
    if nooriginal:
        latter = latter.replace("\n  ", "\n")
    to = select(latter, "\nTo: ", "\n")
    if not to:
        return None
    rec.recipient = find_address(to)
    rec.diagnosis = sweep(rec.diagnosis)
    if contains_any(
        rec.diagnosis,
        ("550 - Requested action not taken: no such user here", "No valid recipients"),
    ):
        rec.reason = "userunknown"
    return Rising(records=[rec], rfc822=latter)
