"""AOL's classic bounces: the recipients by screen name, without a domain.

Before AOL moved to Yahoo's systems, its ``Mail Delivery Subsystem <MAILER-DAEMON@aol.com>``
listed refused recipients by their AOL screen names, one per line, under a sentence such as
``Your mail to the following recipients could not be delivered because they are not accepting
mail with attachments or embedded images:``; the address is the screen name at ``aol.com``.
Written for this repository from that layout.
"""

from __future__ import annotations

import re

from ..dsn import split_original
from ..hosts import find_address, is_email_address
from ..model import Message, Rising
from ..text import sweep
from .base import RFC822_PARTS, Records
from .registry import register

#: an AOL screen name: 3-16 letters, digits and spaces, starting with a letter
_SCREEN_NAME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 ]{2,15})\s*$")
_LEAD = re.compile(r"(?i)your mail to the following recipients? could not be delivered(.*)")


@register("AOLClassic", order=395)
def aolclassic(msg: Message) -> Rising | None:
    """Decode a classic AOL bounce (None: not one)."""
    if not find_address(msg.header("from")).lower().endswith("@aol.com"):
        return None
    former, latter = split_original(msg.payload, RFC822_PARTS)
    recs = Records()
    why = ""
    for line in former.split("\n"):
        lead = _LEAD.search(line)
        if lead is not None:
            why = lead.group(1).strip(" :")
            continue
        if not why:
            continue
        address = find_address(line) if "@" in line else ""
        if is_email_address(address):
            recs.add(address).diagnosis = why
            continue
        name = _SCREEN_NAME.match(line)
        if name is not None:
            recs.add(name.group(1).replace(" ", "").lower() + "@aol.com").diagnosis = why
        elif line.strip():
            why = ""  # the list ended
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
