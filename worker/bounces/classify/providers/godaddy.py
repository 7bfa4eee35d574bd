"""GoDaddy (``*.secureserver.net``): its ``IBnnn`` error codes and rejection texts.

Data from Sisimai's ``rhost/for-godaddy.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from ..text import first_reason, select
from .registry import provider

GODADDY_CODES: dict[str, str] = {
    "IB401": "securityerror", "IB501": "notcompliantrfc", "IB502": "notcompliantrfc",
    "IB506": "rejected", "IB508": "authfailure", "IB108": "requireptr", "IB212": "spamdetected",
    "IB705": "virusdetected", "IB605": "toomanyconn", "IB007": "toomanyconn", "IB101": "speeding",
    "IB110": "blocked", "IB111": "blocked", "IB112": "blocked", "IB113": "blocked",
    "IB504": "speeding", "IB510": "speeding", "IB607": "speeding", "IB103": "badreputation",
    "IB104": "blocked", "IB105": "blocked", "IB106": "blocked",
}  # fmt: skip
GODADDY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("blocked", ("rbl reject", "www.spamhaus.org/query/bl?ip=")),
    ("expired", ("has been in the queue too long", "delivery timeout")),
    ("mailboxfull", ("account storage limit",)),
    ("spamdetected", ("message rejected for spam or virus content",)),
    ("suspend", ("account disabled",)),
    ("systemerror", ("message is looping",)),
    ("userunknown", ("recipient not found", "account does not exist")),
)


@provider("GoDaddy", hosts=("smtp.secureserver.net", "mailstore1.secureserver.net"), order=70)
def godaddy(fo: Fact) -> str:
    """Return the reason for GoDaddy's ``IBnnn`` code, else for its words, or ''."""
    if not fo.diagnostic:
        return ""
    label = "IB" + select(fo.diagnostic, " IB", " ")
    if label in GODADDY_CODES:
        return GODADDY_CODES[label]
    return first_reason(GODADDY, fo.diagnostic.lower())
