"""qmail (``failure notice``) and the qmail-like bounces of several providers."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..model import Message, Rising
from ..text import aligned, contains_any, is_contained, select, sweep
from .base import Records
from .registry import register

__all__ = ["qmail"]

_BOUNDARIES = (
    "--- Below this line is a copy of the message.",
    "--- Below this line is a copy of the mail header.",
    "--- Below the next line is a copy of the message.",
    "--- Mensaje original adjunto.",
    "Content-Type: message/rfc822",
    "Original message follows.",
)
_STARTING = (
    "Hi. This is the qmail",
    "He/Her is not ",
    "unable to deliver your message to the following addresses",
    "Su mensaje no pudo ser entregado",
    "Sorry, we were unable to deliver your message to the following address",
    "This is the machine generated message from mail service",
    "This is the mail delivery agent at",
    "Unable to deliver message to the following address",
    "unable to deliver your message to the following addresses",
    "Unfortunately, your mail was not delivered to the following address:",
    "Your mail message to the following address",
    "Your message to the following addresses",
    "We're sorry.",
)
_RHOST_MARKS = ("Giving up on ", "Connected to ", "remote host ")
# qmail-remote.c: the text after "Connected to <ip>" tells which command failed
_COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CONN", (" but greeting failed.",)),
    ("EHLO", (" but my name was rejected.",)),
    ("MAIL", (" but sender was rejected.",)),
    ("RCPT", (" does not like recipient.",)),
    ("DATA", (" failed on DATA command", " failed after I sent the message")),
)
_EXPIRED = "this message has been in the queue too long."
_ONHOLD = (" does not like recipient.", "this message has been in the queue too long.")
_LDAP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("exceedlimit", ("The message exeeded the maximum size the user accepts",)),
    (
        "suspend",
        (
            "Mailaddress is administrativly disabled",
            "Mailaddress is administrativley disabled",
            "Mailaddress is administratively disabled",
            "Mailaddress is administrativeley disabled",
        ),
    ),
    (
        "systemerror",
        (
            "Automatic homedir creator crashed",
            "Illegal value in LDAP attribute",
            "LDAP attribute is not given but mandatory",
            "Timeout while performing search on LDAP server",
            "Too many results returned but needs to be unique",
            "Permanent error while executing qmail-forward",
            "Temporary error in automatic homedir creation",
            "Temporary error while executing qmail-forward",
            "Temporary failure in LDAP lookup",
            "Unable to contact LDAP server",
            "Unable to login into LDAP server, bad credentials",
        ),
    ),
    ("userunknown", ("Sorry, no mailbox here by that name",)),
)
_MESSAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hostunknown", ("Sorry, I couldn't find any host ",)),
    ("mailboxfull", ("disk quota exceeded",)),
    ("mesgtoobig", ("Message size exceeds fixed maximum message size:",)),
    (
        "networkerror",
        (
            "Sorry, I wasn't able to establish an SMTP connection",
            "Sorry. Although I'm listed as a best-preference MX or A for that host",
        ),
    ),
    ("notaccept", ("Sorry, I couldn't find a mail exchanger or IP address",)),
    ("systemerror", ("bad interpreter: No such file or directory", "system error", "Unable to")),
    ("systemfull", ("Requested action not taken: mailbox unavailable (not enough free space)",)),
    ("userunknown", ("no mailbox here by that name",)),
)


@register("qmail", order=140)
def qmail(msg: Message) -> Rising | None:
    """Decode a qmail bounce (``Hi. This is the qmail-send program at ...``)."""
    subject = msg.header("subject")
    if subject not in ("failure notice", "Failure Notice") and not is_contained(
        "(qmail ", msg.headers.get("received", [])
    ):
        return None
    former, latter = split_original(msg.payload, _BOUNDARIES)
    recs = Records()
    another = [""]
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = contains_any(line, _STARTING)
            continue
        if not line:
            continue
        if line.startswith("<") and aligned(line, ("<", "@", ">:")):
            if recs.cur.recipient:
                another.append("")
            recs.add(select(line, "<", ">:"))
        elif len(recs.items) == recs.count:
            rec = recs.cur
            rec.diagnosis += line + " "
            if line.startswith("Remote host said:"):
                another[-1] = line
            if rec.rhost:
                continue
            for mark in _RHOST_MARKS:
                host = select(line + " ", mark, " ")
                if host:
                    rec.rhost = sweep(host)
                    break
    if not recs.count:
        return None
    for j, rec in enumerate(recs.items):
        rec.diagnosis = sweep(rec.diagnosis)
        for command, texts in _COMMANDS:
            if contains_any(rec.diagnosis, texts):
                rec.command = command
                break
        if not rec.command and "no SMTP connection got far enough" in rec.diagnosis:
            rec.command = codes.find_command(rec.diagnosis)
        if rec.command in ("EHLO", "HELO"):
            rec.reason = "blocked"
        elif aligned(rec.diagnosis, _ONHOLD):
            rec.reason = "onhold"
        else:
            for text in (another[j] if j < len(another) else "", rec.diagnosis):
                if rec.reason:
                    break
                if not text:
                    continue
                for reason, needles in _MESSAGES + _LDAP:
                    if contains_any(text, needles):
                        rec.reason = reason
                        break
                if not rec.reason and _EXPIRED in text:
                    rec.reason = "expired"
        rec.command = rec.command or codes.find_command(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
