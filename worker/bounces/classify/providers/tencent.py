"""Tencent QQ Mail (``*.qq.com``): its rejection texts.

Data from Sisimai's ``rhost/for-tencent.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from ..text import first_reason
from .registry import provider

TENCENT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("authfailure", ("spf check failed", "dmarc check failed")),
    ("blocked", ("suspected bounce attacks", "suspected spam ip", "connection denied")),
    ("mesgtoobig", ("message too large",)),
    ("rejected", ("suspected spam", "mail is rejected by recipients")),
    ("spamdetected", ("spam is embedded in the email", "mail content denied")),
    (
        "speeding",
        ("mailbox unavailable or access denined", "frequency of receiving messages is limited"),
    ),
    ("suspend", ("is a deactivated mailbox",)),
    ("syntaxerror", ("bad address syntax",)),
    (
        "toomanyconn",
        (
            "ip frequency limited",
            "domain frequency limited",
            "sender frequency limited",
            "connection frequency limited",
        ),
    ),
    ("userunknown", ("mailbox not found",)),
)


@provider("Tencent", hosts=(".qq.com",), order=180)
def tencent(fo: Fact) -> str:
    """Return the reason Tencent's words give, or ''."""
    return first_reason(TENCENT, fo.diagnostic.lower()) if fo.diagnostic else ""
