"""The GMX format: decode a GMX bounce (``X-GMX-Antispam`` header, Exim-like wording)."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..hosts import find_address
from ..model import Message, Rising
from ..text import startswith_any, sweep
from .base import Records
from .registry import register


@register("GMX", order=190)
def gmx(msg: Message) -> Rising | None:
    """Decode a GMX bounce (``X-GMX-Antispam`` header, Exim-like wording)."""
    if not msg.headers.get("x-gmx-antispam"):
        return None
    former, latter = split_original(
        msg.payload, ("--- The header of the original message is following. ---",)
    )
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith(
                "This message was created automatically by mail delivery software"
            )
            continue
        if not line:
            continue
        if line.find("@") > 1 and startswith_any(line, ('"', "<")):
            recs.add(find_address(line.strip(":")))
        elif line.startswith("SMTP error "):
            recs.cur.command = codes.find_command(line)
        elif line.startswith("host: "):
            recs.cur.rhost = line[6:]
        else:
            recs.cur.diagnosis += line + " "
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis.replace("\n", " "))
        if "delivery retry timeout exceeded" in rec.diagnosis:
            rec.reason = "expired"
    return Rising(records=recs.items, rfc822=latter)
