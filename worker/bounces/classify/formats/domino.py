"""The Domino format: decode an HCL/IBM Domino ``DELIVERY FAILURE`` report."""

from __future__ import annotations

from .. import codes
from ..dsn import apply_field, field, match, split_original
from ..hosts import find_address
from ..model import Message, Rising
from ..text import aligned, first_reason, sweep
from .base import DsnFields, Records
from .registry import register

_DOMINO: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("filtered", ("Cannot route mail to user",)),
    ("systemerror", ("Several matches found in Domino Directory",)),
    (
        "userunknown",
        (
            "not listed in Domino Directory",
            "not listed in public Name & Address Book",
            "no se encuentra en el Directorio de Domino",
            "non répertorié dans l'annuaire Domino",
            "Domino ディレクトリには見つかりません",
        ),
    ),
)


@register("Domino", order=210)
def domino(msg: Message) -> Rising | None:
    """Decode an HCL/IBM Domino ``DELIVERY FAILURE`` report."""
    subject = msg.header("subject")
    if not (subject.startswith("DELIVERY FAILURE:") or "DELIVERY_FAILURE" in subject):
        return None
    former, latter = split_original(msg.payload, ("Content-Type: message/rfc822",))
    recs = Records()
    dsn = DsnFields()
    cursor = False
    subjecttxt = ""
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("Your message")
            continue
        if not line:
            continue
        rec = recs.cur
        if line == "was not delivered to:":
            recs.add(line)
        elif line.startswith("  ") and line.find("@") > 0 and " " not in line[3:]:
            rec.recipient = find_address(line[2:])
        elif line == "because:" or rec.diagnosis == "because:":
            rec.diagnosis = line
        elif line.startswith("  Subject: "):
            subjecttxt = line[11:]
        else:
            kind = match(line)
            parsed = field(line) if kind else []
            if not parsed:
                continue
            if parsed[3] == "code":
                rec.spec = rec.spec or parsed[1]
                rec.diagnosis = rec.diagnosis or parsed[2]
            elif parsed[3] != "addr":
                apply_field(rec, parsed)
                if kind == 1:
                    dsn.permessage[parsed[0]] = parsed[2]
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.recipient = find_address(rec.recipient)
        reason = first_reason(_DOMINO, rec.diagnosis)
        if reason:
            rec.status = rec.status or codes.pseudo_status(reason, False)
            rec.reason = reason
        elif aligned(rec.diagnosis, ("non r", "pertori", "dans l'annuaire Domino")):
            rec.reason = "userunknown"
    if not latter:
        latter = "To: <" + recs.items[0].recipient + ">\nSubject: " + subjecttxt + "\n"
    return Rising(records=recs.items, rfc822=latter)
