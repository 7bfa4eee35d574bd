"""The Activehunter format: decode a QUALITIA Active!hunter bounce."""

from __future__ import annotations

from ..dsn import split_original
from ..hosts import find_address
from ..model import Message, Rising
from ..text import sweep
from .base import Records
from .registry import register


@register("Activehunter", order=250)
def activehunter(msg: Message) -> Rising | None:
    """Decode a QUALITIA Active!hunter bounce."""
    if not msg.headers.get("x-ahmailid"):
        return None
    former, latter = split_original(msg.payload, ("Content-Type: message/rfc822",))
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith(
                "  ----- The following addresses had permanent fatal errors -----"
            )
            continue
        if not line:
            continue
        if line.startswith(">>> ") and line.find("@") > 0:
            recs.add(find_address(line[5:]))
        elif "0" <= line[0] <= "z" and not recs.cur.diagnosis:
            recs.cur.diagnosis = line
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
