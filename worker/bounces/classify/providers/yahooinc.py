"""Yahoo (``*.yahoodns.net``): its rejection texts.

Data from Sisimai's ``rhost/for-yahooinc.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from ..text import first_reason
from .registry import provider

YAHOOINC: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("authfailure", ("yahoo requires all senders to authenticate with either spf or dkim",)),
    (
        "blocked",
        (
            " because the ip is in spamhaus's list;",
            "not accepted from ip addresses on spamhaus xbl",
        ),
    ),
    ("norelaying", ("relaying denied for ",)),
    ("notcompliantrfc", ("headers are not rfc compliant",)),
    ("policyviolation", ("not accepted for policy reasons",)),
    (
        "rejected",
        (
            "temporarily deferred due to unexpected volume or user complaints",
            "due to unresolvable rfc.5321 domain",
            " will be permanently deferred",
        ),
    ),
    ("speeding", ("user is receiving mail too quickly",)),
    ("suspend", (" is no longer valid.", "this mailbox is disabled")),
    ("syntaxerror", ("syntax error in parameters or arguments",)),
    ("toomanyconn", ("max message per connection reached",)),
    ("userunknown", ("dd this user doesn't have a ", "mailbox not found")),
)


@provider("YahooInc", hosts=(".yahoodns.net",), order=190)
def yahooinc(fo: Fact) -> str:
    """Return the reason Yahoo's words give, or ''."""
    return first_reason(YAHOOINC, fo.diagnostic.lower()) if fo.diagnostic else ""
