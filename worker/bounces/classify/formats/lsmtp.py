"""L-Soft LSMTP (and LISTSERV): an ``Error-for:`` block per failed recipient.

Its reports list each failure in a fixed, machine-readable layout ("This list is in a special
format that allows software like LISTSERV to automatically take action")::

    Error-for:  user@example.edu
    Error-Code: 0
    Error-Text: Mailer mx.example.edu said:
                "554 Message looping (received 6 times)"
    Error-End:  One error reported.

``Error-Text`` may run over indented continuation lines; ``Error-End`` closes the list.
Written for this repository from that documented layout.
"""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..hosts import find_address, find_host, is_email_address
from ..model import Message, Rising
from ..text import sweep
from .base import RFC822_PARTS, Records
from .registry import register

#: where the returned message starts
RFC822 = (*RFC822_PARTS, "------------------------------ Original message")


@register("LSMTP", order=370)
def lsmtp(msg: Message) -> Rising | None:
    """Decode an LSMTP / LISTSERV error list (None: not one)."""
    if "\nError-for:" not in msg.payload and not msg.payload.startswith("Error-for:"):
        return None  # rule it out cheaply
    former, latter = split_original(msg.payload, RFC822)
    recs = Records()
    in_text = False
    for line in former.split("\n"):
        name, _, value = line.partition(":")
        field = name.strip().lower()
        if field == "error-for":
            address = find_address(value)
            in_text = False
            if is_email_address(address):
                recs.add(address)
            continue
        if not recs.count:
            continue
        if field == "error-text":
            recs.cur.diagnosis += " " + value.strip()
            in_text = True
        elif field in ("error-code", "error-end"):
            in_text = False
        elif in_text and line[:1] in (" ", "\t") and line.strip():
            recs.cur.diagnosis += " " + line.strip().strip('"')
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis.replace('"', " "))
        rec.command = codes.find_command(rec.diagnosis)
        rec.rhost = find_host(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
