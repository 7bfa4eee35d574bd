"""Cloudflare Email Routing (``*.mx.cloudflare.net``): DNSBL listings and upstream errors.

Data from Sisimai's ``rhost/for-cloudflare.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from ..text import first_reason
from .registry import provider

CLOUDFLARE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("blocked", ("found on one or more DNSBLs",)),
    ("systemerror", ("Upstream error",)),
)


@provider("Cloudflare", hosts=(".mx.cloudflare.net",), order=30)
def cloudflare(fo: Fact) -> str:
    """Return the reason Cloudflare's words give (compared as they are written), or ''."""
    return first_reason(CLOUDFLARE, fo.diagnostic) if fo.diagnostic else ""
