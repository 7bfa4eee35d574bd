"""The Exchange2003 format: decode an Exchange 2003 NDR (``Your message ... did not reach the following recipient(s)``)."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..model import Message, Rising
from ..text import aligned, append_capped, select, startswith_any, sweep
from .base import Records
from .registry import register

_ERRORCODES_2003: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("userunknown", ("000C05A6",)),
    ("filtered", ("000C0595",)),
    ("systemerror", ("00010256", "000D06B5")),
    ("networkerror", ("00120270",)),
    ("contenterror", ("00050311", "000502CC")),
    ("securityerror", ("000B0981",)),
    ("onhold", ("000B099C", "000B09AA", "000B09B6")),
)


def _is_exchange2003(msg: Message) -> bool:
    if msg.headers.get("x-ms-embedded-report"):
        return True
    mailer = msg.header("x-mailer")
    if mailer.startswith(
        ("Internet Mail Service (", "Microsoft Exchange Server Internet Mail Connector")
    ):
        return True
    if msg.header("x-mimeole").startswith("Produced By Microsoft Exchange"):
        return True
    return any(" with Internet Mail Service (" in r for r in msg.headers.get("received", []))


@register("Exchange2003", order=40)
def exchange2003(msg: Message) -> Rising | None:
    """Decode an Exchange 2003 NDR (``Your message ... did not reach the following recipient(s)``)."""
    if not _is_exchange2003(msg):
        return None
    former, latter = split_original(msg.payload, ("Content-Type: message/rfc822",))
    recs = Records()
    another = [""]
    msexch = [False]
    cursor = statuspart = False
    conn = ["", "", ""]
    connvalues = 0
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("Your message")
            continue
        if statuspart:
            continue
        if connvalues == 3:
            if aligned(line, ("@", " on ")):
                if recs.cur.recipient:
                    another.append("")
                    msexch.append(False)
                addr = select(line.lower(), ":smtp=", "; on ")
                if not addr:
                    addr = select(line, None, " on ").lstrip(" ")
                recs.add(addr)
                msexch[-1] = False
            elif line.startswith(" ") and "MSEXCH:" in line:
                recs.cur.diagnosis += line.lstrip(" ")
            elif not msexch[-1]:
                rec = recs.cur
                if rec.diagnosis.startswith("MSEXCH:"):
                    msexch[-1] = True
                    statuspart = True
                    rec.diagnosis += " " + line
                else:
                    another[-1] = append_capped(another[-1], " " + line)
        elif startswith_any(line, ("  To:  ", "      To: ")):
            if not conn[0]:
                conn[0] = select(line, " To:", None)
                connvalues += 1
        elif startswith_any(line, ("      Subject: ", "  Subject: ")):
            if not conn[1]:
                conn[0] = select(line, " Subject:", None)
                connvalues += 1
        elif startswith_any(line, ("  Sent: ", "      Sent: ")) and not conn[2]:
            conn[0] = select(line, " Sent:", None)
            connvalues += 1
    if not recs.count:
        return None
    for j, rec in enumerate(recs.items):
        rec.diagnosis = sweep(rec.diagnosis)
        if aligned(rec.diagnosis, ("MSEXCH:", "(", ")")):
            captured = select(rec.diagnosis, "(", ")")
            message = select(rec.diagnosis, ") ", None, 1)
            for reason, labels in _ERRORCODES_2003:
                if captured in labels:
                    rec.reason = reason
                    rec.status = codes.pseudo_status(reason, False)
                    break
            rec.diagnosis = message
        if rec.reason or not another[j]:
            continue
        rec.diagnosis = sweep(another[j] + " " + rec.diagnosis)
    if not latter:
        latter = "From: " + conn[0] + "\nSubject: " + conn[2] + "\nDate: " + conn[1] + "\n"
    return Rising(records=recs.items, rfc822=latter)
