"""Symantec.cloud / MessageLabs (``*.messagelabs.com``): its rejection texts.

Data from Sisimai's ``rhost/for-messagelabs.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from ..text import first_reason
from .registry import provider

MESSAGELABS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("authfailure", ("domain authentication fail",)),
    ("badreputation", ("Connection rejected by policy",)),
    (
        "blocked",
        (
            "mail rejected because your IP is in the PBL",
            "your IP address has been ",
            "your IP address (ip-addr) has been blocked",
            "your email address (addr) has been blocked",
        ),
    ),
    ("contenterror", ("Stray linefeeds in message",)),
    ("failedstarttls", ("TLS/SSLv3 Connection required",)),
    ("norelaying", (" as a relay, ",)),
    (
        "notcompliantrfc",
        ("550 Requested action aborted [4]", "has detected that this message is not RFC 5322"),
    ),
    (
        "rejected",
        (
            "sender envelope domain not allowed for sender IP address",
            "your domain has been blocked",
            "your email address has been blocked",
            "your envelope sender is in my badmailfrom list",
            "your email address has been blacklisted",
            "your domain has been blacklisted",
        ),
    ),
    ("securityerror", ("Please turn on SMTP Authentication in your mail client",)),
    ("spamdetected", ("Message Filtered", "filtered by Outbound scanning")),
    ("toomanyconn", ("Too many recipients received this hour", "too many messages")),
    (
        "userunknown",
        (
            "No such user",
            "Invalid recipient",
            "mailbox is not allowed",
            "Recipient mailbox is not allowed",
            # Older Symantec.cloud bounces say only "542 <address> Rejected"
            "542 ",
            " Rejected",
        ),
    ),
)


@provider("MessageLabs", hosts=(".messagelabs.com",), order=120)
def messagelabs(fo: Fact) -> str:
    """Return the reason MessageLabs' words give (compared as they are written), or ''."""
    return first_reason(MESSAGELABS, fo.diagnostic) if fo.diagnostic else ""
