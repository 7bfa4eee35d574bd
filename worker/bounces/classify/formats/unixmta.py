"""Other Unix MTAs: OpenSMTPD, DragonFly dma, Courier, and unidentified MTAs X1-X6."""

from __future__ import annotations

from .. import codes
from ..dsn import apply_field, field, match, split_original
from ..hosts import find_address, find_host, is_email_address
from ..model import FIELD_MEMBER, Message, Rising
from ..text import aligned, contains_any, first_reason, select, startswith_any, sweep
from .base import RFC822_PARTS, DsnFields, Records
from .registry import register

__all__ = ["courier", "dragonfly", "opensmtpd", "x1", "x2", "x3", "x6"]


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


@register("Courier", order=150)
def courier(msg: Message) -> Rising | None:
    """Decode a Courier MTA delivery status notification."""
    if not (
        "Courier mail server at " in msg.header("from")
        or "NOTICE: mail delivery status." in msg.header("subject")
        or "WARNING: delayed mail." in msg.header("subject")
        or msg.header("message-id").startswith("<courier.")
    ):
        return None
    former, latter = split_original(msg.payload, RFC822_PARTS)
    recs = Records()
    dsn = DsnFields()
    thecommand = ""
    cursor = False
    previous = ""
    for line in former.split("\n"):
        before, previous = previous, line
        if not cursor:
            cursor = contains_any(line, ("DELAYS IN DELIVERING YOUR MESSAGE", "UNDELIVERABLE MAIL"))
            continue
        if not line or dsn.feed(line, recs):
            continue
        if line.startswith(">>> "):
            thecommand = codes.find_command(line)
        elif before.startswith("Diagnostic-Code:") and line.startswith(" "):
            recs.cur.diagnosis += " " + sweep(line)
    if not recs.count:
        return None
    dsn.spread(recs)
    table = (
        ("hostunknown", ("No such domain.",)),
        ("systemerror", ("This domain's DNS violates RFC 1035.",)),
        ("networkerror", ("DNS lookup failed.",)),
    )
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.command = thecommand
        rec.reason = first_reason(table, rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)


@register("X1", order=340)
def x1(msg: Message) -> Rising | None:
    """Decode bounces of unidentified MTA #1 (``The original message was received at``)."""
    subject = msg.header("subject")
    if not (
        subject.startswith(("Returned Mail: ", "Mail Delivery Failure"))
        or aligned(msg.header("from"), ('"Mail Deliver', 'System" '))
    ):
        return None
    former, latter = split_original(msg.payload, (RFC822_PARTS[0], "Received: from "))
    if not former:
        return None
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("The original message was received at ")
        if not cursor or not line:
            continue
        if aligned(line, ("@", " [", "]")):
            rec = recs.push()
            addr = select(line, None, " ")
            if not is_email_address(addr):
                continue
            rec.recipient = addr
            rec.diagnosis += " " + line
            recs.count += 1
        else:
            rec = recs.cur
            if line.startswith("---") and line.endswith("---"):
                line = line.strip("-") + ":"
                rec.diagnosis += "."
            rec.diagnosis += " " + line
    if not recs.count:
        return None
    for rec in recs.items:
        rec.date = rec.date or select(rec.diagnosis, " at ", "from").strip(" ")
    return Rising(records=recs.items, rfc822=latter)


@register("X2", order=110)
def x2(msg: Message) -> Rising | None:
    """Decode bounces of unidentified MTA #2 (``Unable to deliver message to the following``)."""
    if not (
        "MAILER-DAEMON@" in msg.header("from")
        or startswith_any(
            msg.header("subject"), ("Delivery failure", "failure delivery", "failed delivery")
        )
    ):
        return None
    former, latter = split_original(msg.payload, ("--- Original message follows.",))
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("Unable to deliver message to the following address")
            continue
        if not line:
            continue
        if line.startswith("<") and aligned(line, ("<", "@", ">:")):
            recs.add(select(line, "<", ">"))
        else:
            recs.cur.diagnosis += " " + line
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)


@register("X3", order=350)
def x3(msg: Message) -> Rising | None:
    """Decode bounces of unidentified MTA #3 (``Delivery status notification`` with details)."""
    if not msg.header("from").startswith("Mail Delivery System"):
        return None
    if not msg.header("subject").startswith("Delivery status notification"):
        return None
    former, latter = split_original(msg.payload, (RFC822_PARTS[0],))
    recs = Records()
    dsn = DsnFields()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith(
                "      This is an automatically generated Delivery Status Notification."
            )
            continue
        if not line:
            continue
        if aligned(line, ("  * ", "@", ".")):
            recs.add(select(line, "  * ", None))
        elif line.startswith("SMTP:"):
            rec = recs.cur
            rec.command = codes.find_command(line[4:10])
            rec.spec = "SMTP"
            rec.diagnosis += " " + line
        elif line.startswith("Routing: "):
            recs.cur.diagnosis += " " + line
        else:
            kind = match(line)
            parsed = field(line) if kind else []
            if not parsed:
                continue
            rec = recs.cur
            if parsed[3] == "addr":
                if parsed[0] != "final-recipient":
                    rec.alias = parsed[2]
                elif rec.recipient != parsed[2]:
                    recs.add(parsed[2])
            elif parsed[3] == "code":
                rec.spec = parsed[1]
                rec.diagnosis += " " + parsed[2]
            else:
                apply_field(rec, parsed)
                if kind == 1:
                    member = FIELD_MEMBER.get(parsed[0], parsed[0])
                    dsn.permessage[member] = parsed[2]
                    if member not in dsn.keys:
                        dsn.keys.append(member)
    if not recs.count:
        return None
    dsn.spread(recs)
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)


@register("X6", order=360)
def x6(msg: Message) -> Rising | None:
    """Decode bounces of unidentified MTA #6 (``There was an error sending your mail``)."""
    if not msg.header("subject").startswith("There was an error sending your mail"):
        return None
    former, latter = split_original(
        msg.payload, ("The attachment contains the original mail headers",)
    )
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("We had trouble delivering your message. Full details follow:")
        if not cursor or not line:
            continue
        p1 = line.find("The following recipients returned permanent errors: ")
        p2 = line.find("SMTP Server <")
        if p1 == 0 or p2 == 0:
            p3 = line.find(": ") if p1 == 0 else line.rfind(" <")
            addr = find_address(line[p3:])
            if not is_email_address(addr):
                continue
            rec = recs.add(addr)
            rec.diagnosis += " " + line
        elif line.startswith("Date: "):
            recs.cur.date = line[6:].strip("'")
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.command = codes.find_command(rec.diagnosis)
        rec.rhost = find_host(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
