"""The Notes format: decode a Lotus/HCL Notes ``Undeliverable message`` report."""

from __future__ import annotations

from ..dsn import split_original
from ..hosts import find_address, is_email_address
from ..model import Message, Rising
from ..text import first_reason, select, sweep
from .base import Records
from .registry import register


@register("Notes", order=220)
def notes(msg: Message) -> Rising | None:
    """Decode a Lotus/HCL Notes ``Undeliverable message`` report."""
    if not msg.header("subject").startswith("Undeliverable message"):
        return None
    former, latter = split_original(msg.payload, ("------- Returned Message --------",))
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("------- Failure Reasons ")
            continue
        if not line:
            continue
        if line.find("@") > 0 and " " not in line:
            if is_email_address(line):
                recs.add(line)
        elif not line.startswith("-"):
            recs.cur.diagnosis += " " + line
    if not recs.count:
        to = select(latter, "\nTo:", "\n")
        if to:
            recs.add(find_address(to))
    if not recs.count:
        return None
    table = (
        ("networkerror", ("Message has exceeded maximum hop count",)),
        (
            "userunknown",
            ("User not listed in public Name & Address Book", "ディレクトリのリストにありません"),
        ),
    )
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.reason = first_reason(table, rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
