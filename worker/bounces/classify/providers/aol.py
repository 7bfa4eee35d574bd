"""AOL Mail (``*.mail.aol.com``, ``*.mx.aol.com``): its words for domains it cannot use.

Data from Sisimai's ``rhost/for-aol.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from ..text import first_reason
from .registry import provider

AOL: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hostunknown", ("Host or domain name not found",)),
    ("notaccept", ("type=MX: Malformed or unexpected name server reply",)),
)


@provider("Aol", hosts=(".mail.aol.com", ".mx.aol.com"), order=10)
def aol(fo: Fact) -> str:
    """Return the reason AOL's words give (compared as they are written), or ''."""
    return first_reason(AOL, fo.diagnostic) if fo.diagnostic else ""
