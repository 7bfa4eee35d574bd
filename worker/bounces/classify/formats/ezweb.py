"""The EZweb format: decode an au by KDDI (ezweb.ne.jp / au.com) ``Mail System Error`` bounce."""

from __future__ import annotations

from .. import codes
from ..dsn import apply_field, field, match, split_original
from ..hosts import find_address
from ..model import Message, Rising
from ..text import aligned, first_reason, select, startswith_any, sweep
from .base import Records
from .registry import register

_EZWEB: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("expired", ("Your message was not delivered within ",)),
    ("mailboxfull", ("The user(s) account is temporarily over quota",)),
    ("onhold", ("Each of the following recipients was rejected by a remote mail server",)),
    (
        "suspend",
        ("The user(s) account is disabled.", "The user(s) account is temporarily limited."),
    ),
)


@register("EZweb", order=300)
def ezweb(msg: Message) -> Rising | None:
    """Decode an au by KDDI (ezweb.ne.jp / au.com) ``Mail System Error`` bounce."""
    sender, msgid = msg.header("from"), msg.header("message-id")
    score = ("Postmaster@ezweb.ne.jp" in sender) + ("Postmaster@au.com" in sender)
    score += msg.header("subject") == "Mail System Error - Returned Mail"
    score += any(
        "ezweb.ne.jp (EZweb Mail) with" in r or ".au.com (" in r
        for r in msg.headers.get("received", [])
    )
    score += (".ezweb.ne.jp>" in msgid) + (".au.com>" in msgid)
    if score < 2:
        return None
    former, latter = split_original(
        msg.payload,
        ("--------------------------------------------------", "Content-Type: message/rfc822"),
    )
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = startswith_any(
                line, ("The user(s) ", "Your message ", "Each of the following", "<")
            )
        if not cursor or not line:
            continue
        rec = recs.cur
        if aligned(line, ("<", "@", ">")) and (
            line.find("Recipient: <") > 1 or line.startswith("<")
        ):
            rec = recs.add(find_address(select(line, "<", ">")))
            rec.diagnosis += " " + line
        elif match(line):
            parsed = field(line)
            if parsed:
                apply_field(rec, parsed)
        elif not line.isascii():
            continue
        else:
            if " >>> " in line:
                rec.command = codes.find_command(line)
            rec.diagnosis += " " + line
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.command = rec.command or codes.find_command(rec.diagnosis)
        if msg.header("x-spasign") == "NG":
            rec.reason = "filtered"
        else:
            rec.reason = first_reason(_EZWEB, rec.diagnosis)
        if rec.reason or "@ezweb.ne.jp" in rec.recipient or "@au.com" in rec.recipient:
            continue
        if rec.diagnosis.startswith("<"):
            rec.reason = "userunknown"
    return Rising(records=recs.items, rfc822=latter)
