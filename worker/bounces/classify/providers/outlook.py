"""Outlook.com / Hotmail (``*.hotmail.com``): its rejection texts.

Data from Sisimai's ``rhost/for-outlook.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from ..text import first_reason
from .registry import provider

OUTLOOK: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "hostunknown",
        ("The mail could not be delivered to the recipient because the domain is not reachable",),
    ),
    ("userunknown", ("Requested action not taken: mailbox unavailable",)),
)


@provider("Outlook", hosts=(".hotmail.com",), order=160)
def outlook(fo: Fact) -> str:
    """Return the reason Outlook.com's words give (compared as they are written), or ''."""
    return first_reason(OUTLOOK, fo.diagnostic) if fo.diagnostic else ""
