"""Mail services with their own bounce texts: Amazon SES, GMX, 1&1, Zoho, Verizon,
Oracle Messaging Server, and the Japanese providers au (EZweb/KDDI) and BIGLOBE."""

from __future__ import annotations

import json
from typing import Any

from .. import codes
from ..dsn import apply_field, field, match, split_original
from ..hosts import find_address, find_host, is_email_address, is_ipv4
from ..model import Message, Record, Rising
from ..text import aligned, contains_any, first_reason, select, startswith_any, sweep
from .base import Records
from .registry import register

__all__ = [
    "amazonses", "biglobe", "einsundeins", "ezweb", "gmx", "kddi", "messagingserver",
    "verizon", "zoho",
]  # fmt: skip


def _ses_json(payload: str) -> dict[str, Any] | None:
    text = payload
    p1 = payload.find("\n\n--\n")
    if p1 > 0:
        text = payload[:p1]
    text = text.replace("!\n ", "")
    p2 = text.find('"Message"')
    if p2 > 0:
        # An SNS envelope carries the SES notification as an escaped JSON string
        text = text.replace("\\", "")
        text = "{" + select(text, "{", "\n", p2 + 9)
        text = text.rstrip(",").rstrip('"')
    text = text.strip()
    if "notificationType" not in text or not text.startswith("{") or not text.endswith("}"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


@register("AmazonSES", order=90)
def amazonses(msg: Message) -> Rising | None:
    """Decode an Amazon SES JSON notification (bounce, complaint or delivery)."""
    data = _ses_json(msg.payload)
    if data is None:
        return None
    kind = data.get("notificationType")
    recs = Records()
    if kind == "Bounce":
        bounce = data.get("bounce") or {}
        for item in bounce.get("bouncedRecipients") or []:
            rec = recs.add(str(item.get("emailAddress", "")))
            rec.diagnosis = sweep(str(item.get("diagnosticCode", "")))
            rec.command = codes.find_command(rec.diagnosis)
            rec.action = str(item.get("action", ""))
            rec.status = codes.find_status(str(item.get("status", "")))
            rec.reply_code = codes.find_reply(rec.diagnosis, rec.status)
            rec.date = str(bounce.get("timestamp", ""))
            rec.lhost = find_host(str(bounce.get("reportingMTA", "")))
    elif kind == "Complaint":
        complaint = data.get("complaint") or {}
        for item in complaint.get("complainedRecipients") or []:
            rec = recs.add(str(item.get("emailAddress", "")))
            rec.reason = "feedback"
            rec.feedback_type = str(complaint.get("complaintFeedbackType", "") or "")
            rec.date = str(complaint.get("timestamp", ""))
            rec.diagnosis = '{{"feedbackid":"{}", "useragent":"{}"}}'.format(
                complaint.get("feedbackId", ""),
                complaint.get("userAgent", ""),
            )
    elif kind == "Delivery":
        delivery = data.get("delivery") or {}
        for addr in delivery.get("recipients") or []:
            rec = recs.add(str(addr))
            rec.reason = rec.action = "delivered"
            rec.date = str(delivery.get("timestamp", ""))
            rec.lhost = str(delivery.get("reportingMTA", ""))
            rec.diagnosis = str(delivery.get("smtpResponse", ""))
            rec.status = codes.find_status(rec.diagnosis, "2")
            rec.reply_code = codes.find_reply(rec.diagnosis, "2")
    if not recs.count:
        return None
    mail = data.get("mail") or {}
    rfc822 = "".join(
        "{}: {}\n".format(h.get("name", ""), h.get("value", ""))
        for h in mail.get("headers") or []
        if isinstance(h, dict)
    )
    common = mail.get("commonHeaders") or {}
    if common.get("date"):
        rfc822 += "Date: {}\n".format(common["date"])
    if common.get("subject"):
        rfc822 += "Subject: {}\n".format(common["subject"])
    return Rising(records=recs.items, rfc822=rfc822)


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


@register("EinsUndEins", order=320)
def einsundeins(msg: Message) -> Rising | None:
    """Decode a 1&1 (1und1) bounce."""
    if not msg.header("from").startswith('"Mail Delivery System"'):
        return None
    if msg.header("subject") != "Mail delivery failed: returning message to sender":
        return None
    former, latter = split_original(
        msg.payload, ("--- The header of the original message is following. ---",)
    )
    recs = Records()
    extra: list[str] = []
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith(
                "This message was created automatically by mail delivery software"
            )
            continue
        if not line:
            continue
        if aligned(line, ("@", ".")) and (line.endswith(":") or " " not in line):
            addr = find_address(line.strip(":"))
            if is_email_address(addr):
                recs.add(addr)
        elif line.startswith("For the following reason:"):
            recs.cur.diagnosis = line
        elif recs.cur.diagnosis:
            recs.cur.diagnosis += " " + line
        else:
            extra.append(" " + line)
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = rec.diagnosis or "".join(extra)
        rec.command = codes.find_command(rec.diagnosis)
        if aligned(rec.diagnosis, ("host: ", " reason:")):
            rec.rhost = sweep(select(rec.diagnosis, "host: ", " "))
            rec.status = codes.find_status(rec.diagnosis)
            if "for TEXT command" in rec.diagnosis:
                rec.command = "DATA"
            if "SMTP error" in rec.diagnosis:
                rec.spec = "SMTP"
        rec.diagnosis = sweep(rec.diagnosis)
        if "Mail size limit exceeded" in rec.diagnosis:
            rec.reason = "mesgtoobig"
    return Rising(records=recs.items, rfc822=latter)


@register("Verizon", order=80)
def verizon(msg: Message) -> Rising | None:
    """Decode a Verizon Wireless (vtext.com) bounce."""
    sender = msg.header("from")
    if "post_master@vtext.com" not in sender and not aligned(sender, ("sysadmin@", ".vzwpix.com")):
        return None
    payload = msg.payload
    nooriginal = "Message details:" in payload
    if nooriginal:
        payload = payload.replace("Sent date: ", "Date: ", 1).replace(
            "MAIL FROM: ", "Return-Path: ", 1
        )
        payload = payload.replace("RCPT TO: ", "To: ", 1)
    former, latter = split_original(payload, ("Original Message:", "Message details:"))
    rec = Record()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("Error: ")
        if cursor and line:
            rec.diagnosis += line
    if nooriginal:
        latter = latter.replace("\n  ", "\n")
    to = select(latter, "\nTo: ", "\n")
    if not to:
        return None
    rec.recipient = find_address(to)
    rec.diagnosis = sweep(rec.diagnosis)
    if contains_any(
        rec.diagnosis,
        ("550 - Requested action not taken: no such user here", "No valid recipients"),
    ):
        rec.reason = "userunknown"
    return Rising(records=[rec], rfc822=latter)


@register("MessagingServer", order=160)
def messagingserver(msg: Message) -> Rising | None:
    """Decode an Oracle (Sun, iPlanet) Messaging Server report."""
    if not (
        "Boundary_(ID_" in msg.header("content-type")
        or msg.header("subject").startswith("Delivery Notification: ")
    ):
        return None
    former, latter = split_original(
        msg.payload, ("Content-Type: message/rfc822", "\nReturn-Path: ")
    )
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith(
                "This report relates to a message you sent with the following header fields:"
            )
            continue
        if not line:
            continue
        rec = recs.cur
        if aligned(line, ("  Recipient address: ", "@", ".")) or aligned(
            line, ("  Original address: ", "@", ".")
        ):
            addr = select(line, ": ", None, 16)
            if not is_email_address(addr):
                continue
            if rec.recipient and addr != rec.recipient:
                rec = recs.push()
            rec.recipient = addr
            recs.count += 1
        elif line.startswith("  Date: "):
            rec.date = select(line, "Date: ", None, 1)
        elif line.startswith("  Reason: "):
            rec.date = select(line, " Reason: ", None, 1)
        elif line.startswith("  Diagnostic code: "):
            parsed = field(line.strip(" ").replace("Diagnostic code:", "Diagnostic-Code:", 1))
            if not parsed:
                continue
            rec.spec = parsed[1]
            rec.reply_code = codes.find_reply(parsed[2])
            rec.status = codes.find_status(parsed[2], rec.reply_code)
            rec.diagnosis += " " + parsed[2]
        elif line.startswith("  Remote system: "):
            rec.rhost = select(line, ";", " (")
            if not rec.rhost:
                continue
            parts = select(line, " (", ")").split("|")
            if len(parts) == 5 and parts[0] == "TCP" and rec.rhost.find(".") <= 0:
                if is_ipv4(parts[1]):
                    rec.lhost = parts[1]
                if is_ipv4(parts[3]):
                    rec.rhost = parts[3]
        elif line.startswith("Status: "):
            rec.status = rec.status or codes.find_status(line, rec.reply_code)
            rec.diagnosis = rec.diagnosis or select(line, "(", ")", 1)
        elif line.startswith("Arrival-Date: "):
            rec.date = rec.date or select(line, "-Date: ", None, 1)
        elif line.startswith("Reporting-MTA: ") and rec.lhost.find(".") <= 0:
            parsed = field(line)
            if parsed:
                rec.lhost = parsed[2]
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        if "Illegal host/domain name found" in rec.diagnosis:
            rec.reason = "hostunknown"
    return Rising(records=recs.items, rfc822=latter)


@register("Biglobe", order=310)
def biglobe(msg: Message) -> Rising | None:
    """Decode a BIGLOBE bounce (``Returned mail:`` from postmaster@*.biglobe.ne.jp)."""
    sender = msg.header("from")
    if "postmaster@" not in sender or not msg.header("subject").startswith("Returned mail:"):
        return None
    if not any("@" + p + ".ne.jp" in sender for p in ("biglobe", "inacatv", "tmtv", "ttv")):
        return None
    former, latter = split_original(msg.payload, ("Content-Type: message/rfc822",))
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("   ----- The following addresses had delivery problems -----")
            continue
        if not line:
            continue
        if line.find("@") > 1 and " " not in line:
            if is_email_address(line):
                recs.add(line)
        elif "--" not in line:
            recs.cur.diagnosis += line + " "
    if not recs.count:
        return None
    table = (
        ("filtered", ("Mail Delivery Failed... User unknown",)),
        (
            "mailboxfull",
            ("The number of messages in recipient's mailbox exceeded the local limit.",),
        ),
    )
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.reason = first_reason(table, rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)


_EZWEB: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("expired", ("Your message was not delivered within ",)),
    ("mailboxfull", ("The user(s) account is temporarily over quota",)),
    ("onhold", ("Each of the following recipients was rejected by a remote mail server",)),
    (
        "suspend",
        ("The user(s) account is disabled.", "The user(s) account is temporarily limited."),
    ),
)


@register("EZweb", order=300)
def ezweb(msg: Message) -> Rising | None:
    """Decode an au by KDDI (ezweb.ne.jp / au.com) ``Mail System Error`` bounce."""
    sender, msgid = msg.header("from"), msg.header("message-id")
    score = ("Postmaster@ezweb.ne.jp" in sender) + ("Postmaster@au.com" in sender)
    score += msg.header("subject") == "Mail System Error - Returned Mail"
    score += any(
        "ezweb.ne.jp (EZweb Mail) with" in r or ".au.com (" in r
        for r in msg.headers.get("received", [])
    )
    score += (".ezweb.ne.jp>" in msgid) + (".au.com>" in msgid)
    if score < 2:
        return None
    former, latter = split_original(
        msg.payload,
        ("--------------------------------------------------", "Content-Type: message/rfc822"),
    )
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = startswith_any(
                line, ("The user(s) ", "Your message ", "Each of the following", "<")
            )
        if not cursor or not line:
            continue
        rec = recs.cur
        if aligned(line, ("<", "@", ">")) and (
            line.find("Recipient: <") > 1 or line.startswith("<")
        ):
            rec = recs.add(find_address(select(line, "<", ">")))
            rec.diagnosis += " " + line
        elif match(line):
            parsed = field(line)
            if parsed:
                apply_field(rec, parsed)
        elif not line.isascii():
            continue
        else:
            if " >>> " in line:
                rec.command = codes.find_command(line)
            rec.diagnosis += " " + line
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.command = rec.command or codes.find_command(rec.diagnosis)
        if msg.header("x-spasign") == "NG":
            rec.reason = "filtered"
        else:
            rec.reason = first_reason(_EZWEB, rec.diagnosis)
        if rec.reason or "@ezweb.ne.jp" in rec.recipient or "@au.com" in rec.recipient:
            continue
        if rec.diagnosis.startswith("<"):
            rec.reason = "userunknown"
    return Rising(records=recs.items, rfc822=latter)


@register("KDDI", order=60)
def kddi(msg: Message) -> Rising | None:
    """Decode an au by KDDI (dion.ne.jp, auone-net.jp) bounce."""
    ok = contains_any(msg.header("from"), ("no-reply@.", ".dion.ne.jp"))
    ok = ok or "no-reply@app.auone-net.jp" in msg.header("reply-to")
    ok = ok or any(
        "ezweb.ne.jp (" in r or ".au.com (" in r for r in msg.headers.get("received", [])
    )
    if not ok:
        return None
    former, latter = split_original(msg.payload, ("Content-Type: message/rfc822",))
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("Your mail sent on:")
        if not cursor or not line:
            continue
        if " Could not be delivered to: <" in line:
            rec = recs.push()
            addr = select(line, ": <", ">", 16)
            if is_email_address(addr):
                rec.recipient = addr
                recs.count += 1
        elif "Your mail sent on: " in line:
            recs.cur.date = line[19:]
        elif line.startswith(" "):
            recs.cur.diagnosis += line + " "
    if not recs.count:
        return None
    table = (
        ("mailboxfull", ("As their mailbox is full",)),
        ("norelaying", ("Due to the following SMTP relay error",)),
        ("hostunknown", ("As the remote domain doesnt exist",)),
    )
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.command = codes.find_command(rec.diagnosis)
        if msg.header("x-spasign") == "NG":
            rec.reason = "filtered"
        elif rec.command == "RCPT":
            rec.reason = "userunkonwn"
        else:
            rec.reason = first_reason(table, rec.diagnosis)
    return Rising(records=recs.items, rfc822=latter)
