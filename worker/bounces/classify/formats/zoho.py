"""The Zoho format: decode a Zoho Mail bounce (``X-ZohoMail`` header)."""

from __future__ import annotations

from ..dsn import split_original
from ..hosts import find_address
from ..model import Message, Rising
from ..text import aligned, sweep
from .base import Records
from .registry import register


@register("Zoho", order=200)
def zoho(msg: Message) -> Rising | None:
    """Decode a Zoho Mail bounce (``X-ZohoMail`` header)."""
    if not msg.headers.get("x-zohomail"):
        return None
    former, latter = split_original(msg.payload, ("\n\nReceived:",), keeps=True)
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("This message was created automatically by mail delivery")
            continue
        if not line:
            continue
        if aligned(line, ("@", " ", "ERROR_CODE :")) or line.startswith("[Status: "):
            rec = recs.add(find_address(line))
            rec.diagnosis += " " + line
        elif not line.startswith("-----"):
            recs.cur.diagnosis += " " + line
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        if "Host not reachable" in rec.diagnosis:
            rec.reason = "expired"
    return Rising(records=recs.items, rfc822=latter)
