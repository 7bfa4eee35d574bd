"""MDaemon (Alt-N): "<address> - <what went wrong>" lines, or the address in the Subject.

MDaemon's own notices come from ``MDaemon@<host>`` with ``X-MDaemon-Deliver-To`` and
``X-MDSend-Notifications-To`` headers. Its unknown-user notice has the Subject ``Warning:
<address> - User unknown!`` (a "Warning" that is final: the message was not delivered) and the
line ``<address> - no such user here.``; its "permanent fatal delivery errors" notice names
the recipient and the remote server's reply in the session transcript that follows. Written for
this repository from those documented notices.
"""

from __future__ import annotations

import re

from .. import codes
from ..dsn import split_original
from ..hosts import find_address, find_host, is_email_address
from ..model import Message, Rising
from ..text import sweep
from .base import RFC822_PARTS, Records
from .registry import register

#: "user@example.net - no such user here."
_ENTRY = re.compile(r"^\s*<?([^\s<>]+@[^\s<>]+?)>?\s+-\s+(\S.{0,300})$")
#: a line of the remote server's reply in the transcript
_REPLY = re.compile(r"^\s*[<>]*\s*[45]\d\d[ -]")


@register("MDaemon", order=390)
def mdaemon(msg: Message) -> Rising | None:
    """Decode an MDaemon notice (None: not one)."""
    if not (
        msg.header("x-mdaemon-deliver-to")
        or msg.header("x-mdsend-notifications-to")
        or msg.header("from").lower().startswith("mdaemon@")
    ):
        return None
    former, latter = split_original(msg.payload, RFC822_PARTS)
    recs = Records()
    replies: list[str] = []
    for line in former.split("\n"):
        found = _ENTRY.match(line)
        address = find_address(found.group(1)) if found is not None else ""
        if found is not None and is_email_address(address):
            recs.add(address).diagnosis = found.group(2)
        elif _REPLY.match(line):
            replies.append(line.strip().lstrip("<> "))
    subject = msg.header("subject")
    if not recs.count and " - " in subject:  # "Warning: user@example.net - User unknown!"
        address = find_address(subject.partition(":")[2].partition(" - ")[0])
        if is_email_address(address):
            recs.add(address).diagnosis = subject.partition(" - ")[2]
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(" ".join([rec.diagnosis, *replies]))
        rec.command = codes.find_command(rec.diagnosis) or (
            "RCPT" if "user" in rec.diagnosis.lower() else ""
        )
        rec.rhost = find_host(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
