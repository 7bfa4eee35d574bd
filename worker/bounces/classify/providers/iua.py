"""I.UA (``*.email.ua``): the error number of its ``.i.ua/err/N/`` help links.

Data from Sisimai's ``rhost/for-iua.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from ..text import select
from .registry import provider

IUA: dict[str, str] = {
    "1": "norelaying", "2": "userunknown", "3": "suspend", "4": "mailboxfull", "5": "toomanyconn",
    "6": "norelaying", "7": "blocked", "8": "rejected", "9": "blocked", "10": "filtered",
}  # fmt: skip


@provider("IUA", hosts=(".email.ua",), order=100)
def iua(fo: Fact) -> str:
    """Return the reason for the error number of I.UA's help link, or ''."""
    code = select(fo.diagnostic.lower(), ".i.ua/err/", "/") if fo.diagnostic else ""
    return IUA.get(code, "")
