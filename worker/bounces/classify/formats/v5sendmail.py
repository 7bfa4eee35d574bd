"""The V5sendmail format: decode a Sendmail version 5 bounce (``Returned mail: ...`` with a transcript)."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..hosts import find_address, find_host, is_email_address, is_internet_host
from ..model import Message, Rising
from ..text import aligned, select, startswith_any, sweep
from .base import Records
from .registry import register


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
