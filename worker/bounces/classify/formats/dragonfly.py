"""The DragonFly format: decode a DragonFly Mail Agent (dma) bounce."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..hosts import find_address
from ..model import Message, Rising
from ..text import first_reason, sweep
from .base import Records
from .registry import register


@register("DragonFly", order=330)
def dragonfly(msg: Message) -> Rising | None:
    """Decode a DragonFly Mail Agent (dma) bounce."""
    if "Mail delivery failed" not in msg.header("subject"):
        return None
    if not any(" (DragonFly Mail Agent" in r for r in msg.headers.get("received", [])):
        return None
    former, latter = split_original(
        msg.payload, ("Original message follows.", "Message headers follow")
    )
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("This is the DragonFly Mail Agent ")
            continue
        if not line:
            continue
        if line.startswith("There was an error delivering your mail to <"):
            recs.add(find_address(line[line.find("<") :]))
            continue
        rec = recs.cur
        rec.diagnosis += line
        if " did not like our " not in line or rec.rhost:
            continue
        words = line.split(" ", 2)
        rec.rhost = words[0] if words[0].find(".") > 1 else words[1]
        rec.command = codes.find_command(line)
    if not recs.count:
        return None
    table = (
        ("expired", ("Could not deliver for the last ",)),
        ("hostunknown", ("DNS lookup failure: host ",)),
    )
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.reason = first_reason(table, rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
