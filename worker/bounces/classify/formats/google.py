"""Gmail, Google Workspace and Google Groups bounces (``Delivery Status Notification``)."""

from __future__ import annotations

from .. import codes
from ..dsn import split_original
from ..hosts import find_address, find_host, is_email_address, parse_received
from ..model import Message, Rising
from ..text import contains_any, select, sweep
from .base import RFC822_PARTS, Records
from .registry import register

__all__ = ["gmail", "googlegroups", "googleworkspace"]

_FROM = "<mailer-daemon@googlemail.com>"
_SUBJECT = "Delivery Status Notification"
# Gmail's "(state NN)" tells the SMTP phase the remote server failed in
_STATES = {
    "6": ("MAIL", "failedstarttls"),
    "8": ("AUTH", "systemerror"),
    "9": ("AUTH", "failedstarttls"),
    "12": ("AUTH", "relayingdenied"),
    "13": ("EHLO", "blocked"),
    "14": ("RCPT", "userunknown"),
    "15": ("DATA", "filtered"),
    "17": ("DATA", "filtered"),
    "18": ("DATA", "filtered"),
}
_GMAIL_MESSAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "expired",
        (
            "DNS Error: Could not contact DNS servers",
            "Delivery to the following recipient has been delayed",
            "The recipient server did not accept our requests to connect",
        ),
    ),
    (
        "hostunknown",
        ("DNS Error: Domain name not found", "DNS Error: DNS server returned answer with no data"),
    ),
)


@register("Gmail", order=180)
def gmail(msg: Message) -> Rising | None:
    """Decode a classic Gmail bounce (``Delivery to the following recipient failed``)."""
    if _FROM not in msg.header("from") or _SUBJECT not in msg.header("subject"):
        return None
    former, latter = split_original(
        msg.payload, ("----- Original message -----", "----- Message header follows -----")
    )
    recs = Records()
    cursor = False
    for line in former.split("\n"):
        if not cursor:
            cursor = line.startswith("Delivery to the following recipient")
        if not cursor or not line:
            continue
        if line.startswith(" ") and line.find("@") > 0:
            rec = recs.push()
            addr = find_address(line.strip(" "))
            if is_email_address(addr):
                rec.recipient = addr
                recs.count += 1
        else:
            recs.cur.diagnosis += line + " "
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.rhost = find_host(rec.diagnosis)
        state = _STATES.get(select(rec.diagnosis, " (state ", ")"))
        if state:
            rec.command, rec.reason = state
        if not rec.reason:
            for reason, texts in _GMAIL_MESSAGES:
                if contains_any(rec.diagnosis, texts):
                    rec.reason = reason
                    break
        if not rec.reason:
            continue
        rec.status = codes.find_status(rec.diagnosis, rec.reply_code)
        if rec.status and ".0" not in rec.status:
            rec.reason = codes.reason_of_status(rec.status)
    return Rising(records=recs.items, rfc822=latter)


@register("GoogleWorkspace", order=170)
def googleworkspace(msg: Message) -> Rising | None:
    """Decode a Google Workspace bounce without DSN fields (``** Message not delivered **``)."""
    if contains_any(msg.payload, ("\nDiagnostic-Code:", "\nFinal-Recipient:")):
        return None
    if _FROM not in msg.header("from") or _SUBJECT not in msg.header("subject"):
        return None
    former, latter = split_original(msg.payload, RFC822_PARTS)
    if not former:
        return None
    rec = Records()
    cursor = False
    diag = ""
    for line in former.split("\n"):
        if not cursor:
            if line.startswith("** "):
                cursor = True
                diag = line + " "
            continue
        if line and not line.startswith("Content-Type:"):
            diag += line + " "
    addr = find_address(select(latter, "\nTo:", "\n"))
    if not addr:
        return None
    cur = rec.add(addr)
    cur.diagnosis = diag
    if (
        "because the address couldn't be found. Check for typos or unnecessary spaces and try again."
        in diag
    ):
        cur.reason = "userunknown"
    return Rising(records=rec.items, rfc822=latter)


@register("GoogleGroups", order=270)
def googlegroups(msg: Message) -> Rising | None:
    """Decode a Google Groups rejection (the group does not exist or refuses the sender)."""
    if "Google Groups" not in msg.payload:
        return None
    failed = msg.header("x-failed-recipients")
    if not failed or not msg.headers.get("x-google-smtp-source"):
        return None
    if _FROM not in msg.header("from") or _SUBJECT not in msg.header("subject"):
        return None
    former, latter = split_original(
        msg.payload, ("----- Original message -----", "Content-Type: message/rfc822")
    )
    chunks = former.split("\n\n", 4)
    chunks[-1] = ""
    issued = sweep(" ".join(chunks).replace("\n", " "))
    received = msg.headers.get("received") or [""]
    rhost = parse_received(received[0]).get("by", "")
    reason = "onhold"
    if former.count("\n *") == 4 or former.count("\n*") == 4:
        reason = "rejected"
    recs = Records()
    for addr in failed.split(","):
        if not is_email_address(addr):
            continue
        rec = recs.add(find_address(addr))
        rec.rhost, rec.reason, rec.diagnosis = rhost, reason, issued
    if not recs.count:
        return None
    return Rising(records=recs.items, rfc822=latter)
