"""Automatic replies (RFC 3834): vacation and out-of-office messages.

Ported from Sisimai's ``rfc3834`` package (go-sisimai, BSD 2-Clause License,
Copyright (C) 2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from .hosts import find_address, is_email_address
from .model import Message, Record, Rising
from .text import contains_any, squeeze, startswith_any, sweep

__all__ = ["inquire", "is_autoreply"]

_DONT_DECODE = {
    "from": ("root@", "postmaster@", "mailer-daemon@"),
    "to": ("root@",),
    "subject": ("security information for", "mail failure -"),
}
_AUTOREPLY = {
    "auto-submitted": ("auto-generated", "auto-replied", "auto-notified"),
    "precedence": ("auto_reply",),
    "subject": (
        "auto:",
        "auto response:",
        "automatic reply:",
        "out of office:",
        "out of the office:",
    ),
    "x-apple-action": ("vacation",),
}


def is_autoreply(message: Message) -> bool:
    """Return True when the headers mark an automatic reply (and not a system message)."""
    lower = {k: message.header(k).lower() for k in ("from", "to", "subject", *tuple(_AUTOREPLY))}
    if any(contains_any(lower[k], v) for k, v in _DONT_DECODE.items()):
        return False
    return any(startswith_any(lower[k], v) for k, v in _AUTOREPLY.items())


def inquire(message: Message) -> Rising | None:
    """Decode an auto-reply into one ``vacation`` record for its sender."""
    if not is_autoreply(message):
        return None
    rec = Record()
    for name in ("from", "return-path"):
        addr = find_address(message.header(name))
        if is_email_address(addr):
            rec.recipient = addr
            break
    if not rec.recipient:
        return None
    body = squeeze(message.payload, "\n").strip("\n")
    lines = body.split("\n")
    if len(lines) < 5:
        rec.diagnosis = sweep(body.replace("\n", " "))
    else:
        rec.diagnosis = " ".join(e for e in lines if e and not e.startswith("--")) + " "
    rfc822 = ""
    subject = message.header("subject")
    p1 = subject.find(": ")
    if p1 > -1 and contains_any(subject.lower(), _AUTOREPLY["subject"]):
        rfc822 += "Subject: " + sweep(subject[p1 + 2 :]) + "\n"
    rec.reason = "vacation"
    rec.date = message.header("date")
    rfc822 += "To: <" + rec.recipient + ">\n"
    return Rising(records=[rec], rfc822=rfc822)
