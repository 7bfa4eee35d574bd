"""Mail gateways and groupware: Domino, Notes, IMail, m-FILTER, Active!hunter, MailFoundry,
InterScan MSS, MailMarshal, fml and Apache James."""

from __future__ import annotations

from .. import codes
from ..dsn import apply_field, field, match, split_original
from ..hosts import find_address, is_email_address
from ..mime import boundary
from ..model import Message, Rising
from ..text import FIELD_MAX, aligned, contains_any, first_reason, is_contained, select, sweep
from .base import DsnFields, Records
from .registry import register

__all__ = [
    "activehunter", "apachejames", "domino", "fml", "imailserver", "interscanmss",
    "mailfoundry", "mailmarshalsmtp", "mfilter", "notes",
]  # fmt: skip


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


@register("IMailServer", order=230)
def imailserver(msg: Message) -> Rising | None:
    """Decode an Ipswitch/Progress IMail Server ``Undeliverable Mail`` report."""
    if not (
        msg.header("subject").startswith("Undeliverable Mail ")
        or msg.header("x-mailer").startswith("<SMTP32 v")
    ):
        return None
    former, latter = split_original(msg.payload, ("Original message follows.",))
    recs = Records()
    buffer: list[str] = []
    for line in former.split("\n"):
        if (line.find(": ") > 8 and aligned(line, (": ", "@"))) or line.startswith(
            "undeliverable "
        ):
            rec = recs.add(find_address(line))
            rec.diagnosis = line
        elif "Body of message generated response:" in line or buffer:
            buffer.append(line)
    if not recs.count:
        return None
    table = (
        ("hostunknown", ("Unknown host",)),
        ("userunknown", ("Unknown user", "Invalid final delivery userid")),
        ("mailboxfull", ("User mailbox exceeds allowed size",)),
        ("virusdetected", ("Requested action not taken: virus detected",)),
        ("spamdetected", ("Blacklisted URL in message",)),
        ("expired", ("Delivery failed ",)),
    )
    alternates = " ".join(buffer)[:FIELD_MAX]  # added to every record: bounded
    for rec in recs.items:
        rec.diagnosis = sweep((alternates + " " + rec.diagnosis).replace("\n", " "))
        rec.command = codes.find_command(rec.diagnosis)
        rec.reason = first_reason(table, rec.diagnosis)
    if "\nFrom: " not in latter:
        latter = "From: " + msg.header("to") + "\n" + latter + "\n"
    if "\nTo: " not in latter:
        latter = "To: " + recs.items[0].recipient + "\n" + latter + "\n"
    return Rising(records=recs.items, rfc822=latter)


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


@register("MailFoundry", order=260)
def mailfoundry(msg: Message) -> Rising | None:
    """Decode a MailFoundry ``Message delivery has failed`` report."""
    if msg.header("subject") != "Message delivery has failed":
        return None
    if not any("(MAILFOUNDRY) id" in r for r in msg.headers.get("received", [])):
        return None
    former, latter = split_original(msg.payload, ("Content-Type: message/rfc822",))
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("Unable to deliver message to:")
        if not cursor or not line:
            continue
        if line.startswith("Unable to deliver message to: <") and line.find("@") > 0:
            recs.add(select(line, ": <", ">"))
        elif line == "Delivery failed for the following reason:":
            recs.cur.diagnosis = line
        elif recs.cur.diagnosis and not line.startswith("-"):
            recs.cur.diagnosis += " " + line
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)


@register("InterScanMSS", order=50)
def interscanmss(msg: Message) -> Rising | None:
    """Decode a Trend Micro InterScan Messaging Security Suite bounce."""
    if not (
        msg.header("from").startswith('"InterScan')
        or "InterScan" in msg.header("content-type")
        or " InterScan " in msg.payload
    ):
        return None
    former, latter = split_original(msg.payload, ("Content-Type: message/rfc822",))
    recs = Records()
    for line in former.split("\n"):
        if not line:
            continue
        p1, p2 = line.find(" <<< "), line.find(" >>> ")
        if (
            line.find("@") > 1
            and line.find(" <") > 1
            and (p1 > 1 or p2 > 1 or "Unable to deliver " in line)
        ):
            p3, p4 = line.rfind("<"), line.rfind(">")
            addr = find_address(line[p3 : p4 + 1])
            if not is_email_address(addr):
                continue
            rec = recs.cur
            if rec.recipient and rec.recipient not in addr:
                rec = recs.push()
            if "Unable to deliver " in line:
                rec.diagnosis = line
            rec.recipient = addr
            recs.count = len(recs.items)
        rec = recs.cur
        if line.startswith("Sent <<< "):
            rec.command = codes.find_command(line)
        elif line.startswith("Received >>> "):
            rec.diagnosis = select(line, " >>> ", None, 8)
        elif p1 > 0 or p2 > 0:
            if " >>> " in line:
                rec.command = codes.find_command(line)
            if " <<< " in line:
                rec.diagnosis = select(line, "<<<", None, 3)
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        if "Unable to deliver" in rec.diagnosis:
            rec.reason = "userunknown"
    return Rising(records=recs.items, rfc822=latter)


@register("MailMarshalSMTP", order=280)
def mailmarshalsmtp(msg: Message) -> Rising | None:
    """Decode a Trustwave MailMarshal ``Undeliverable Mail`` report."""
    if not msg.header("subject").startswith('Undeliverable Mail: "'):
        return None
    cuts = ["'+++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++"]
    end = boundary(msg.header("content-type"), 1)
    if end:
        cuts.append(end)
    former, latter = split_original(msg.payload, cuts)
    recs = Records()
    cursor = endoferror = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("Your message:")
        if not cursor:
            continue
        rec = recs.cur
        if line.startswith("    ") and line.find("@") > 0:
            recs.add(line[4:])
        elif line == "Could not be delivered because of":
            rec.diagnosis = line
        elif rec.diagnosis and not endoferror:
            if line.startswith("The following recipients were affected:"):
                endoferror = True
                continue
            rec.diagnosis += " " + line
        elif line.startswith("Original Sender: "):
            latter += "From: " + select(line, "<", ">") + "\n"
        elif line.startswith("Sender-MTA: "):
            rec.lhost = select(line, "<", ">")
        elif line.startswith("Reporting-MTA: "):
            rec.rhost = select(line, "<", ">")
        elif contains_any(line, (" From:", " Subject:")):
            p1 = line.find(" From:")
            if p1 < 0:
                p1 = line.find(" Subject:")
            p2 = line.find(":")
            latter += line[p1 + 1 : p2] + ": " + sweep(line[p2 + 1 :]) + "\n"
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)


_FML_TITLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "rejected",
        (
            " are not member",
            "NOT MEMBER article from ",
            "reject mail ",
            "Spam mail from a spammer is rejected",
        ),
    ),
    (
        "systemerror",
        (
            "fml system error message",
            "Loop Alert: ",
            "Loop Back Warning: ",
            "WARNING: UNIX FROM Loop",
        ),
    ),
    ("securityerror", ("Security Alert",)),
)
_FML_TABLE: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "rejected",
        (
            " header may cause mail loop",
            "NOT MEMBER article from ",
            "reject mail from ",
            "reject spammers:",
            "You are not a member of this mailing list",
        ),
    ),
    ("securityerror", ("Security alert:",)),
    (
        "systemerror",
        (" has detected a loop condition so that", "Loop Back Warning:", "Duplicated Message-ID"),
    ),
)


@register("FML", order=70)
def fml(msg: Message) -> Rising | None:
    """Decode an error returned by the fml mailing list manager."""
    if not msg.headers.get("x-mlserver") or msg.header("from").find("-admin@") < 1:
        return None
    if msg.header("message-id").find(".FML") < 2:
        return None
    former, latter = split_original(msg.payload, ("Original mail as follows:",))
    recs = Records()
    for line in former.split("\n"):
        if not line:
            continue
        addr = select(line, "<", ">")
        if addr:
            recs.add(addr).diagnosis = line
        else:
            recs.cur.diagnosis += line
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.reason = first_reason(_FML_TABLE, rec.diagnosis) or first_reason(
            _FML_TITLES, msg.header("subject")
        )
    return Rising(records=recs.items, rfc822=latter)


@register("ApacheJames", order=100)
def apachejames(msg: Message) -> Rising | None:
    """Decode an Apache James ``[BOUNCE]`` message."""
    if not (
        msg.header("subject") == "[BOUNCE]"
        or ".JavaMail." in msg.header("message-id")
        or is_contained("JAMES SMTP Server", msg.headers.get("received", []))
    ):
        return None
    former, latter = split_original(msg.payload, ("Content-Type: message/rfc822",))
    recs = Records()
    alt = ["", "", "", ""]
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            if line.startswith("Message details:"):
                cursor = True
            elif line:
                recs.cur.diagnosis += line + " "
            continue
        if not line:
            continue
        if line.startswith("  RCPT TO: "):
            recs.add(line[11:].strip())
        elif line.startswith("  Sent date: "):
            recs.cur.date = alt[2] = line[13:]
        elif line.startswith("  Subject: "):
            alt[3] = line[11:]
        elif line.startswith("  MAIL FROM: "):
            alt[0] = line[13:]
        elif line.startswith("  From: "):
            alt[1] = line[8:]
    if not recs.count:
        return None
    if not latter:
        if alt[1]:
            latter += "From: " + alt[1] + "\n"
        if alt[2]:
            latter += "Date: " + alt[2] + "\n"
    if "Return-Path: " not in latter and alt[0]:
        latter += "Return-Path: <" + alt[0] + ">\n"
    if "\nSubject: " not in latter and alt[3]:
        latter += "Subject: " + alt[3] + "\n"
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
