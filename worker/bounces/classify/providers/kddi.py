"""au by KDDI (``*.ezweb.ne.jp``, ``msmx.au.com``): its two ``user unknown`` replies.

Data from Sisimai's ``rhost/for-kddi.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from ..text import first_reason
from .registry import provider

KDDI: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("filtered", ("550 : user unknown",)),
    ("userunknown", (">: user unknown",)),
)


@provider("KDDI", hosts=(".ezweb.ne.jp", "msmx.au.com"), order=110)
def kddi(fo: Fact) -> str:
    """Return the reason KDDI's words give, or ''."""
    return first_reason(KDDI, fo.diagnostic.lower()) if fo.diagnostic else ""
