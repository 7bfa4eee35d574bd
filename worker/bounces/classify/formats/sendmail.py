"""Sendmail (V8, Sentrion) and the old Sendmail version 5 bounce formats."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..hosts import final_address, find_address, find_host, is_email_address, is_internet_host
from ..model import Message, Rising
from ..text import aligned, select, startswith_any, sweep
from .base import RFC822_PARTS, DsnFields, Records
from .registry import register

__all__ = ["sendmail", "v5sendmail"]

_TRANSCRIPT = "   ----- Transcript of session follows -----"


@register("Sendmail", order=20)
def sendmail(msg: Message) -> Rising | None:
    """Decode a V8 Sendmail bounce (``Returned mail: see transcript for details``)."""
    if msg.headers.get("x-aol-ip"):
        return None
    subject = msg.header("subject")
    if not (subject.startswith("Warning: ") or subject.endswith("see transcript for details")):
        return None
    former, latter = split_original(msg.payload, RFC822_PARTS)
    recs = Records()
    dsn = DsnFields()
    replies: list[str] = []
    other_diag, other_status = "", ""
    session_error = False
    thecommand = ""
    cursor = False
    previous = ""
    for line in former.split("\n"):
        before, previous = previous, line
        if not cursor:
            cursor = line.startswith(_TRANSCRIPT)
            continue
        if dsn.feed(line, recs):
            continue
        if not line.startswith(" "):
            if line.startswith(">>> "):
                thecommand = thecommand or codes.find_command(line)
            elif line.startswith("<<< "):
                if not any(line[4:] in r for r in replies):
                    replies.append(line[4:])
            elif not session_error:
                if line.startswith("... while talking to "):
                    session_error = True
                elif line.startswith("<") and aligned(line, ("@", ">.", " ")):
                    other_diag = select(line, " ", None, 1)
                else:
                    cr, cs = codes.find_reply(line), codes.find_status(line)
                    if len(cr + cs) > 7:
                        other_status = cs
                        other_diag += " " + line
                    elif startswith_any(line, ("Message: ", "Warning: ")):
                        other_diag += " " + line
        elif before.startswith("Diagnostic-Code:"):
            recs.cur.diagnosis += " " + sweep(line)
    if not recs.count:
        return None
    dsn.spread(recs)
    for rec in recs.items:
        rec.recipient = final_address(rec.recipient)
        if other_diag and (
            rec.diagnosis.startswith(" ") or rec.diagnosis.isdigit() or not rec.diagnosis
        ):
            rec.diagnosis = other_diag
        if replies and recs.count == 1:
            rec.diagnosis = " ".join(replies) + " " + rec.diagnosis
        rec.diagnosis = sweep(rec.diagnosis)
        rec.command = rec.command or thecommand or codes.find_command(rec.diagnosis)
        if not rec.command and replies:
            rec.command = "EHLO"
        if other_status and not codes.valid_status(rec.status):
            rec.status = other_status
        if rec.recipient.startswith("@"):
            found = find_address(rec.diagnosis)
            if found:
                rec.recipient = found
    return Rising(records=recs.items, rfc822=latter)


@register("V5sendmail", order=290)
def v5sendmail(msg: Message) -> Rising | None:
    """Decode a Sendmail version 5 bounce (``Returned mail: ...`` with a transcript)."""
    if not msg.header("subject").startswith("Returned mail: "):
        return None
    former, latter = split_original(
        msg.payload,
        ("   ----- Unsent message follows -----", "  ----- No message was collected -----"),
    )
    if not latter:
        return None
    recs = Records()
    another: dict[int, str] = {}
    remotehost = curcommand = ""
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = "----- Transcript of session follows -----" in line
            continue
        if not line:
            continue
        if line.startswith(">>> "):
            curcommand = codes.find_command(line[4:])
        if aligned(line, (" <", "@", ">...")) or ">>> RCPT TO:" in line.upper():
            inner = select(line, " <", ">...") or select(line, ":<", ">")
            addr = find_address(inner) if inner else ""
            if not remotehost:
                another[recs.count] = another.get(recs.count, "") + " " + line
                continue
            rec = recs.cur
            if addr == rec.recipient or (curcommand == "MAIL" and line.startswith("<<< ")):
                rec.diagnosis += " " + line
                rec.reply_code = codes.find_reply(line)
                curcommand = ""
            else:
                rec = recs.add(addr)
                rec.rhost = remotehost
                rec.reply_code = codes.find_reply(line)
                rec.diagnosis += " " + line
                rec.command = rec.command or curcommand
        elif "While talking to " in line:
            host = find_host(line)
            if is_internet_host(host):
                remotehost = host
        elif startswith_any(line, (">>> ", "<<< ")):
            recs.cur.diagnosis += " " + line
        else:
            another[recs.count] = another.get(recs.count, "") + " " + line
    if not recs.count:
        for idx, text in sorted(another.items()):
            addr = find_address(text)
            if not addr or idx >= len(recs.items):
                continue
            rec = recs.items[idx]
            rec.recipient, rec.reply_code, rec.diagnosis = addr, codes.find_reply(text), text
            recs.count += 1
        if not recs.count:
            to = select(latter, "\nTo: ", "\n")
            if not to or not is_email_address(to):
                return None
            recs.items[0].recipient = to
            recs.count = 1
    for j, rec in enumerate(recs.items):
        rec.diagnosis = rec.diagnosis or another.get(j, "")
        rec.command = rec.command or codes.find_command(rec.diagnosis)
        rec.diagnosis = sweep(rec.diagnosis)
        rec.reply_code = codes.find_reply(rec.diagnosis)
        if not is_email_address(rec.recipient):
            rec.recipient = find_address(select(rec.diagnosis, "<:", ">"))
    return Rising(records=recs.items, rfc822=latter)
