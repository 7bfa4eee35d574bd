"""The Sendmail format: decode a V8 Sendmail bounce (``Returned mail: see transcript for details``)."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..hosts import final_address, find_address
from ..model import Message, Rising
from ..text import aligned, select, startswith_any, sweep
from .base import RFC822_PARTS, DsnFields, Records
from .registry import register

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
