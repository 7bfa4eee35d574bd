"""The ApacheJames format: decode an Apache James ``[BOUNCE]`` message."""

from __future__ import annotations

from ..dsn import split_original
from ..model import Message, Rising
from ..text import is_contained, sweep
from .base import Records
from .registry import register


@register("ApacheJames", order=100)
def apachejames(msg: Message) -> Rising | None:
    """Decode an Apache James ``[BOUNCE]`` message."""
    if not (
        msg.header("subject") == "[BOUNCE]"
        or ".JavaMail." in msg.header("message-id")
        or is_contained("JAMES SMTP Server", msg.headers.get("received", []))
    ):
        return None
    former, latter = split_original(msg.payload, ("Content-Type: message/rfc822",))
    recs = Records()
    alt = ["", "", "", ""]
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            if line.startswith("Message details:"):
                cursor = True
            elif line:
                recs.cur.diagnosis += line + " "
            continue
        if not line:
            continue
        if line.startswith("  RCPT TO: "):
            recs.add(line[11:].strip())
        elif line.startswith("  Sent date: "):
            recs.cur.date = alt[2] = line[13:]
        elif line.startswith("  Subject: "):
            alt[3] = line[11:]
        elif line.startswith("  MAIL FROM: "):
            alt[0] = line[13:]
        elif line.startswith("  From: "):
            alt[1] = line[8:]
    if not recs.count:
        return None
    if not latter:
        if alt[1]:
            latter += "From: " + alt[1] + "\n"
        if alt[2]:
            latter += "Date: " + alt[2] + "\n"
    if "Return-Path: " not in latter and alt[0]:
        latter += "Return-Path: <" + alt[0] + ">\n"
    if "\nSubject: " not in latter and alt[3]:
        latter += "Subject: " + alt[3] + "\n"
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
