"""Postfix bounces (``Undelivered Mail Returned to Sender``) and SMTP error transcripts."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import codes
from ..dsn import split_original
from ..hosts import find_address
from ..model import Message, Rising
from ..text import aligned, append_capped, only_digits, select, sweep
from .base import RFC822_PARTS, DsnFields, Records
from .registry import register

__all__ = ["postfix", "transcript"]

_STARTING = (
    ("The ", "Postfix "),
    ("The ", "mail system"),
    ("The ", "program"),
    ("This is the", "Postfix"),
    ("This is the", "mail system"),
)


@dataclass(slots=True)
class Exchange:
    """One SMTP command of a session transcript and the server's answer."""

    command: str
    argument: str = ""
    reply: str = ""
    status: str = ""
    text: list[str] = field(default_factory=list)


def transcript(text: str, client: str = ">>>", server: str = "<<<") -> list[Exchange]:
    """Parse an SMTP session transcript (``In:``/``Out:`` or ``>>>``/``<<<`` lines)."""
    p1, p2 = text.find(client), text.find(server)
    if p1 < 0 or p2 < 0:
        return []
    text = text[p2:] if p2 < p1 else text[p1:]
    p3 = text.find("\n\n")
    if p3 > 0:
        text = text[: p3 + 1]
    lines: list[str] = []
    for line in text.split("\n"):
        line = line.lstrip(" ")
        if line.startswith(client):
            lines.append(">>> " + line[len(client) :].lstrip(" "))
        elif line.startswith(server):
            lines.append("<<< " + line[len(server) :].lstrip(" "))
        elif lines:
            lines[-1] = append_capped(lines[-1], " " + line)
    session: list[Exchange] = []
    for line in lines:
        if line.startswith(">>> "):
            cmd = codes.find_command(line)
            if not cmd:
                continue
            arg = line[line.find(cmd) + len(cmd) :].lstrip(" ")
            ex = Exchange(command=cmd.upper())
            if cmd in ("MAIL", "RCPT") and arg.upper().startswith(("FROM:", "TO:")):
                lt, gt = arg.find("<"), arg.find(">")
                if lt > -1 and gt > -1:
                    ex.argument = arg[lt + 1 : gt]
            session.append(ex)
        elif line.startswith("<<< "):
            if not session:
                session.append(Exchange(command="CONN"))
            cur = session[-1]
            cur.reply = codes.find_reply(line)
            cur.status = codes.find_status(line)
            cur.text.append(line[4:])
    return session


@register("Postfix", order=120)
def postfix(msg: Message) -> Rising | None:
    """Decode a Postfix bounce, or Postfix's ``SMTP server: errors from`` notice."""
    if msg.headers.get("x-aol-ip"):
        return None
    subject = msg.header("subject")
    if subject.find("SMTP server: errors from ") > 0:
        mode = 2
    elif subject == "Undelivered Mail Returned to Sender":
        mode = 1
    else:
        return None
    former, latter = split_original(msg.payload, RFC822_PARTS)
    recs = Records()
    dsn = DsnFields()
    another: dict[str, str] = {}
    commandset: list[str] = []
    nomessages = False
    if mode == 2:
        exchanges = transcript(former, "In:", "Out:")
        if not exchanges:
            return None
        for ex in exchanges:
            rec = recs.cur
            if ex.command in ("EHLO", "HELO"):
                rec.lhost = ex.argument
            elif ex.command == "MAIL":
                if not latter:
                    latter += "To: " + ex.argument + "\n"
            elif ex.command == "RCPT":
                rec = recs.add(ex.argument)
            if not ex.reply.isdigit() or int(ex.reply) < 400:
                continue
            commandset.append(ex.command)
            rec.diagnosis = rec.diagnosis or " ".join(ex.text)
            rec.reply_code = rec.reply_code or ex.reply
            rec.status = rec.status or ex.status
    else:
        cursor = False
        previous = ""
        for line in former.split("\n"):
            before, previous = previous, line
            if not cursor:
                cursor = any(aligned(line, pair) for pair in _STARTING)
                continue
            if dsn.feed(line, recs):
                rec = recs.cur
                if rec.spec.upper() == "X-POSTFIX":
                    rec.spec = "SMTP"
                continue
            if before.startswith("Diagnostic-Code:") and line.startswith(" "):
                recs.cur.diagnosis += " " + sweep(line)
                previous = "Diagnostic-Code: " + line
            elif aligned(line, ("X-Postfix-Sender:", "rfc822;", "@")):
                latter += "X-Postfix-Sender: " + line.split(";", 1)[1].strip() + "\n"
            elif "(in reply to " in line or "command)" in line:
                cv = codes.find_command(line)
                if cv:
                    commandset.append(cv)
                if another.get("diagnosis"):
                    another["diagnosis"] = append_capped(another["diagnosis"], " " + line)
            elif aligned(line, ("<", "@", ">", "(expanded from <", "):")):
                another["recipient"] = find_address(select(line, "<", "> "))
                another["alias"] = find_address(select(line, "(expanded from ", "):"))
                p1 = line.find(">): ") + 4
                if len(line) > p1:
                    another["diagnosis"] = line[p1:]
            elif line.startswith("<") and aligned(line, ("<", "@", ">:")):
                another["recipient"] = find_address(line[: line.find(">") + 1])
                another["diagnosis"] = line[line.find(">:") + 2 :]
            elif "--- Delivery report unavailable ---" in line:
                nomessages = True
            elif another.get("diagnosis") and line.startswith("    "):
                another["diagnosis"] = append_capped(
                    another["diagnosis"], " " + line[4:].strip(" ")
                )
    if not recs.count:
        if another.get("recipient"):
            recs.add(another["recipient"])
        elif nomessages:
            addr = find_address(select(latter, "\nTo: ", "\n"))
            if addr:
                recs.add(addr)
    if not recs.count:
        return None
    dsn.spread(recs)
    alt = sweep(another.get("diagnosis", ""))
    for rec in recs.items:
        if alt:
            rec.diagnosis = rec.diagnosis or alt
            if only_digits(rec.diagnosis):
                rec.diagnosis = alt
            else:
                cs = cr = ""
                if not rec.status or rec.status.endswith(".0.0"):
                    cs = codes.find_status(alt)
                    if cs and not cs.endswith(".0.0"):
                        rec.status = cs
                if not rec.reply_code or rec.reply_code.endswith("00"):
                    cr = codes.find_reply(alt)
                    if cr and not cr.endswith("00"):
                        rec.reply_code = cr
                if (cs or cr) and len(alt) >= len(rec.diagnosis) and rec.diagnosis in alt:
                    rec.diagnosis = alt
        rec.diagnosis = sweep(rec.diagnosis)
        if commandset:
            rec.command = commandset[0]
        else:
            rec.command = codes.find_command(rec.diagnosis)
            if not rec.command and "refused to talk to me:" in rec.diagnosis:
                rec.command = "HELO"
        if not rec.spec and aligned(rec.diagnosis, ("host ", " said:")):
            rec.spec = "SMTP"
    return Rising(records=recs.items, rfc822=latter)
