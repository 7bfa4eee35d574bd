"""iCloud Mail (``*.mail.icloud.com``, ``*.apple.com``, ``*.me.com``): its rejection texts.

Data from Sisimai's ``rhost/for-apple.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from ..text import first_reason
from .registry import provider

APPLE: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "authfailure",
        ("s dmarc policy", "blocked for failing both spf and dkim autentication checks"),
    ),
    (
        "blocked",
        (
            "rejected due to having a domain present in the spamhaus",
            "rejected due to listing in spamhaus",
            "blocked - see https://support.proofpoint.com/dnsbl-lookup",
            "not accepting connections",
        ),
    ),
    ("hasmoved", ("recipient no longer on server",)),
    ("mailboxfull", ("user is over quota",)),
    ("norelaying", ("relay access denied",)),
    ("notaccept", ("host/domain does not accept mail",)),
    ("policyviolation", ("due to local policy",)),
    ("rejected", ("sender address rejected",)),
    ("speeding", ("due to excessive volume",)),
    ("userunknown", ("inactive email address", "user does not exist", "unknown or illegal alias")),
)


@provider("Apple", hosts=(".mail.icloud.com", ".apple.com", ".me.com"), order=20)
def apple(fo: Fact) -> str:
    """Return the reason iCloud's words give, or ''."""
    return first_reason(APPLE, fo.diagnostic.lower()) if fo.diagnostic else ""
