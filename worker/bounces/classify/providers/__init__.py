"""Reasons specific to large mailbox providers, chosen by recipient domain or remote host.

Providers document their own error codes (Gmail's, Microsoft's AS/S codes, Orange's OFR_/LPN
labels, Spectrum's AUP#...). Each module holds one provider's host suffixes, its tables and its
finder ``(Fact) -> str`` (``google.py`` Gmail and Google Workspace, which share a source),
registered with ``@provider(name, hosts=..., order=...)`` (:mod:`.registry`), as Sisimai's
``rhost`` package does (go-sisimai, BSD 2-Clause License, Copyright (C) 2014 azumakuniyuki and
the sisimai development team). Adding a provider: docs/adding-a-bounce-format.md.
"""

from __future__ import annotations

from functools import lru_cache

from ..reasons import Fact

# the modules whose finders register themselves: a new provider's module is imported here
from . import (  # noqa: F401
    aol,
    apple,
    cloudflare,
    cox,
    facebook,
    franceptt,
    godaddy,
    google,
    iua,
    kddi,
    messagelabs,
    microsoft,
    mimecast,
    nttdocomo,
    outlook,
    registry,
    spectrum,
    tencent,
    yahooinc,
)
from .registry import Provider

__all__ = ["PROVIDERS", "Provider", "find_rhost_reason", "provider_of"]

#: every provider, by name, in the order they are matched (each module registers its own)
PROVIDERS: dict[str, Provider] = registry.providers()

_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (p.name, p.hosts) for p in PROVIDERS.values()
)


def provider_of(fo: Fact) -> str:
    """Return the provider name for a recipient domain, remote host or local host."""
    return _provider(fo.destination.lower(), fo.rhost.lower(), fo.lhost.lower())


@lru_cache(maxsize=4096)
def _provider(domain: str, rhost: str, lhost: str) -> str:
    # the domain first, then the hosts; the first provider in order that matches wins
    if domain:
        for name, hosts in _CLASSES:
            if any(h.endswith(domain) for h in hosts):
                return name
    for host in (rhost, lhost):
        if not host:
            continue
        for name, hosts in _CLASSES:
            if any(host.endswith(h) for h in hosts):
                return name
    return ""


def find_rhost_reason(fo: Fact) -> str:
    """Return a provider-specific reason, or '' when the provider is unknown or silent."""
    name = provider_of(fo)
    return PROVIDERS[name].find(fo) if name else ""
