"""Reasons for send-time failures, in the bounce vocabulary (``../shared/bounce-corpus``).

The same names label bounces and send-time rejections, so a product shows one vocabulary.
"""

from __future__ import annotations

#: enhanced status (RFC 3463) -> reason, most specific first
_BY_STATUS = {
    "5.1.1": "userunknown",
    "5.1.0": "userunknown",
    "5.1.2": "hostunknown",
    "5.1.6": "hasmoved",
    "5.1.10": "notaccept",
    "5.2.1": "suspend",
    "5.2.2": "mailboxfull",
    "4.2.2": "mailboxfull",
    "5.2.3": "exceedlimit",
    "5.3.4": "mesgtoobig",
    "5.3.1": "systemfull",
    "4.3.1": "systemfull",
    "5.4.4": "hostunknown",
    "5.4.6": "networkerror",
    "5.5.1": "syntaxerror",
    "5.5.2": "syntaxerror",
    "5.5.4": "syntaxerror",
    "5.6.0": "contenterror",
    "5.7.1": "rejected",
    "5.7.0": "securityerror",
    "5.7.8": "securityerror",
    "5.7.23": "authfailure",
    "5.7.25": "requireptr",
    "5.7.26": "authfailure",
}
_BY_KIND = {
    "suppressed": "suppressed",
    "expired": "expired",
    "auth": "securityerror",
    "config": "systemerror",
    "error": "undefined",
}
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})

#: reason -> how a person reads it on the Failed Sends page
PLAIN_WORDS = {
    "userunknown": "Mailbox does not exist",
    "hostunknown": "Domain does not exist",
    "hasmoved": "Address has moved",
    "notaccept": "Domain does not accept email",
    "mailboxfull": "Mailbox is full",
    "exceedlimit": "Message exceeds the recipient's size limit",
    "mesgtoobig": "Message is too large",
    "suspend": "Mailbox is disabled",
    "filtered": "Refused by the recipient's filters",
    "rejected": "Sender refused",
    "blocked": "Sending server blocked",
    "spamdetected": "Considered spam",
    "virusdetected": "Virus detected",
    "policyviolation": "Refused by the receiver's policy",
    "authfailure": "Sender authentication (SPF/DKIM/DMARC) failed",
    "securityerror": "Authentication problem",
    "requireptr": "Sending server has no reverse DNS",
    "networkerror": "Network or DNS problem",
    "systemerror": "Error on the receiving system",
    "systemfull": "Receiving system is full",
    "syntaxerror": "Protocol error",
    "contenterror": "Message format refused",
    "toomanyconn": "Too many connections",
    "expired": "Gave up after repeated temporary failures",
    "suppressed": "Address is on the suppression list",
    "feedback": "Recipient reported the message as spam",
    "undefined": "Delivery failed",
    "onhold": "Delivery failed",
}


def reason_for(reply_code: int | None, status: str | None, text: str, kind: str) -> str:
    """The reason name for a failure at send time."""
    if kind in _BY_KIND:
        return _BY_KIND[kind]
    if status and status in _BY_STATUS:
        return _BY_STATUS[status]
    if status and status[2:] in {k[2:] for k in _BY_STATUS}:
        return next(v for k, v in _BY_STATUS.items() if k[2:] == status[2:])
    lowered = text.lower()
    if "user unknown" in lowered or "no such user" in lowered or "does not exist" in lowered:
        return "userunknown"
    if reply_code == 552:
        return "mailboxfull"
    if reply_code == 554:
        return "rejected"
    return "undefined"


def is_hard(reply_code: int | None, status: str | None, text: str) -> bool:
    """Hard: the address will never work (the corpus' rule: unknown user/host, moved)."""
    permanent = (status or "").startswith("5") or (reply_code or 0) >= 500
    return permanent and reason_for(reply_code, status, text, "rejected") in HARD_REASONS


def plain_words(reason: str, status: str | None = None) -> str:
    """``Mailbox does not exist (5.1.1)``."""
    words = PLAIN_WORDS.get(reason, reason)
    return f"{words} ({status})" if status else words
