"""NTT DOCOMO (``mfsmax.docomo.ne.jp``): its status codes, replies and the SMTP phase.

Data from Sisimai's ``rhost/for-nttdocomo.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from ..text import first_reason
from .registry import provider

NTTDOCOMO: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mailboxfull", ("552 too much mail data",)),
    ("syntaxerror", ("503 bad sequence of commands", "504 command parameter not implemented")),
    ("toomanyconn", ("552 too many recipients",)),
)


@provider("NTTDOCOMO", hosts=("mfsmax.docomo.ne.jp",), order=150)
def nttdocomo(fo: Fact) -> str:
    """Return the reason for docomo's status, words or SMTP phase, or ''."""
    if not fo.diagnostic:
        return ""
    status, issued = fo.status, fo.diagnostic.lower()
    if status in ("5.1.1", "5.0.911"):
        return "userunknown"
    if status == "5.2.0":
        return "filtered"
    found = first_reason(NTTDOCOMO, issued)
    if found or status != "5.0.0":
        return found
    # A docomo rejection at DATA is its per-user filter, at RCPT an unknown user
    return {"RCPT": "userunknown", "DATA": "rejected"}.get(fo.command, "")
