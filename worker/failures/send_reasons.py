"""Reasons for send-time failures, in the bounce vocabulary (``../shared/bounce-corpus``).

The same names label bounces and send-time rejections, so a product shows one vocabulary.
"""

from __future__ import annotations

from worker.bounces.classify.codes import is_hard_bounce
from worker.bounces.classify.reasons import Fact, find_reason

_BY_KIND = {
    "suppressed": "suppressed",
    "expired": "expired",
    "auth": "securityerror",
    "config": "systemerror",
    "error": "undefined",
}

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


def reason_for(
    reply_code: int | None, status: str | None, text: str, kind: str, command: str | None = None
) -> str:
    """The reason name for a failure at send time, by the bounce classifier's rules."""
    if kind in _BY_KIND:
        return _BY_KIND[kind]
    fact = Fact(
        status=status or "",
        reply_code=str(reply_code or ""),
        diagnostic=text,
        command=command or "",
        action="failed",
    )
    return find_reason(fact) or "undefined"


def is_hard(
    reply_code: int | None, status: str | None, text: str, command: str | None = None
) -> bool:
    """Hard: the address will never work (the corpus' rule: unknown user/host, moved)."""
    permanent = (status or "").startswith("5") or (reply_code or 0) >= 500
    reason = reason_for(reply_code, status, text, "rejected", command)
    return permanent and is_hard_bounce(reason, f"{status or ''} {text}")


def plain_words(reason: str, status: str | None = None) -> str:
    """``Mailbox does not exist (5.1.1)``."""
    words = PLAIN_WORDS.get(reason, reason)
    return f"{words} ({status})" if status else words
