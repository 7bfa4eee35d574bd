"""The mFILTER format: decode a Digital Arts m-FILTER ``failure notice``."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..hosts import is_email_address
from ..model import Message, Rising
from ..text import sweep
from .base import Records
from .registry import register


@register("mFILTER", order=240)
def mfilter(msg: Message) -> Rising | None:
    """Decode a Digital Arts m-FILTER ``failure notice``."""
    if msg.header("subject") != "failure notice" or msg.header("x-mailer") != "m-FILTER":
        return None
    former, latter = split_original(
        msg.payload, ("-------original message", "-------original mail info")
    )
    recs = Records()
    cursor = in_error = in_command = False
    for line in former.split("\n"):
        if not cursor and line.find("@") > 1 and " " not in line and is_email_address(line):
            cursor = True
        if not cursor or not line:
            continue
        if line.find("@") > 0 and " " not in line:
            if is_email_address(line):
                recs.add(line)
            continue
        if line == "-------server message":
            in_error = True
            continue
        if line == "-------SMTP command":
            in_error, in_command = False, True
            continue
        rec = recs.cur
        if in_error and not rec.diagnosis:
            rec.diagnosis, in_error = line, False
        elif in_command and codes.is_command(line):
            rec.command, in_command = line, False
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
