"""Novell GroupWise Internet Agent: "<address> (<what went wrong>)" under a lead-in sentence.

Its reports (``X-Mailer: Novell GroupWise Internet Agent``, Subject ``Message status -
undeliverable``) say ``The message that you sent was not delivered to the following:`` and
list each recipient with the reason in parentheses, e.g. ``user@example.net (user not found)``
or ``user@example.org (host not found)``; the original follows after ``Original message``
or as an attachment. Written for this repository from that documented layout.
"""

from __future__ import annotations

import re

from .. import codes
from ..dsn import split_original
from ..hosts import find_address, is_email_address
from ..model import Message, Rising
from ..text import sweep
from .base import RFC822_PARTS, Records
from .registry import register

#: where the returned message starts
RFC822 = (*RFC822_PARTS, "--- Original message ---", "-------- Original Message --------")
_ENTRY = re.compile(r"^\s*<?([^\s<>()]+@[^\s<>()]+)>?\s+\(([^()]{1,200})\)\s*$")
#: the agent's own words for the two failures it names: the domain does not resolve
_REASONS = {"host not found": "hostunknown", "domain not found": "hostunknown"}


@register("GroupWise", order=380)
def groupwise(msg: Message) -> Rising | None:
    """Decode a GroupWise Internet Agent report (None: not one)."""
    mailer = msg.header("x-mailer").lower()
    if "groupwise" not in mailer and not msg.header("subject").startswith("Message status -"):
        return None
    former, latter = split_original(msg.payload, RFC822)
    recs = Records()
    for line in former.split("\n"):
        found = _ENTRY.match(line)
        if found is None:
            continue
        address = find_address(found.group(1))
        if is_email_address(address):
            recs.add(address).diagnosis = found.group(2)
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        # the agent checked the recipient before taking the message: an unknown user was refused
        # at RCPT, as the text says of it
        rec.command = codes.find_command(rec.diagnosis) or "RCPT"
        rec.reason = _REASONS.get(rec.diagnosis.lower(), "")
    return Rising(records=recs.items, rfc822=latter)
