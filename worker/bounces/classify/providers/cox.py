"""Cox (``cox.net``): its ``AUP#`` error codes (CXBL, IPBL..., URLBL...) and rejection texts.

Data from Sisimai's ``rhost/for-cox.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from ..text import first_reason, select
from .registry import provider

COX_CODES: dict[str, str] = {
    "CXBL": "blocked", "CXDNS": "requireptr", "CXSNDR": "authfailure", "CXSMTP": "rejected",
    "CXCNCT": "toomanyconn", "CXMXRT": "toomanyconn", "CDRBL": "blocked",
    "CXTHRT": "securityerror", "CXMJ": "securityerror",
    **{f"IPBL{c}": "blocked" for c in (
        "0001", "0010", "0100", "0011", "0101", "0110", "0111", "1000", "1001", "1010",
        "1011", "1100", "1101", "1110", "1111", "00001",
    )},
    "URLBL011": "spamdetected", "URLBL101": "spamdetected", "URLBL110": "spamdetected",
    "URLBL1001": "spamdetected",
}  # fmt: skip
COX: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("blocked", ("cox too many bad commands from", "too many invalid recipients")),
    ("requireptr", ("dns check failure - try again later", "rejected - no rdns")),
    ("policyviolation", ("esmtp no data before greeting", "attachment extension is forbidden")),
    ("rejected", ("sender rejected",)),
    ("systemerror", ("esmtp server temporarily not available",)),
    (
        "toomanyconn",
        (
            "too many sessions from",
            "requested action aborted: try again later",
            "message threshold exceeded",
        ),
    ),
    ("userunknown", ("recipient rejected",)),
)


@provider("Cox", hosts=("cox.net",), order=40)
def cox(fo: Fact) -> str:
    """Return the reason for Cox's ``AUP#`` code, else for its words, or ''."""
    if not fo.diagnostic:
        return ""
    code = select(fo.diagnostic + " ", "AUP#", " ")
    if code in COX_CODES:
        return COX_CODES[code]
    return first_reason(COX, fo.diagnostic.lower())
