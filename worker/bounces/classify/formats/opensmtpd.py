"""The OpenSMTPD format: decode an OpenSMTPD bounce (``This is the MAILER-DAEMON, please DO NOT REPLY``)."""

from __future__ import annotations

from ..dsn import split_original
from ..model import Message, Rising
from ..text import aligned, first_reason, select, sweep
from .base import Records
from .registry import register

_OPENSMTPD: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("expired", ("Envelope expired",)),
    ("securityerror", ("Could not retrieve credentials",)),
    ("hostunknown", ("Invalid domain name", "Domain does not exist")),
    (
        "networkerror",
        (
            "Address family mismatch on destination MXs",
            "All routes to destination blocked",
            "bad DNS lookup error code",
            "Could not retrieve source address",
            "Loop detected",
            "Network error on destination MXs",
            "No valid route to remote MX",
            "No valid route to destination",
            "Temporary failure in MX lookup",
        ),
    ),
    (
        "notaccept",
        (
            "Destination seem to reject all mails",
            "No MX found for domain",
            "No MX found for destination",
        ),
    ),
)


@register("OpenSMTPD", order=130)
def opensmtpd(msg: Message) -> Rising | None:
    """Decode an OpenSMTPD bounce (``This is the MAILER-DAEMON, please DO NOT REPLY``)."""
    score = ("Delivery status notification" in msg.header("subject")) + (
        "Mailer Daemon <" in msg.header("from")
    )
    if any(" (OpenSMTPD) with " in r for r in msg.headers.get("received", [])):
        score += 1
    if not score:
        return None
    former, latter = split_original(msg.payload, ("    Below is a copy of the original message:",))
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("    This is the MAILER-DAEMON, please DO NOT REPLY to this")
            continue
        if line and aligned(line, ("@", " ")):
            rec = recs.add(select(line, None, ":"))
            rec.diagnosis = select(line, ": ", None)
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.reason = first_reason(_OPENSMTPD, rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
