"""Where providers register their own codes (``@provider``), in the order they are matched.

A provider is a large mailbox service that documents its own error codes or words (Gmail's,
Microsoft's, Orange's ``OFR_``...). It is recognised by the suffixes of its hosts (``hosts``:
its MX or relay hosts, matched against a recipient domain, then the remote and local hosts),
and its finder ``(Fact) -> str`` returns the reason its words give, or '' when they say nothing
it knows. ``order`` places it among the others (lower first; the first provider whose hosts
match is the only one asked). Adding a provider: docs/adding-a-bounce-format.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..reasons import Fact

Finder = Callable[[Fact], str]


@dataclass(frozen=True)
class Provider:
    """One registered provider."""

    name: str
    hosts: tuple[str, ...]
    find: Finder
    order: int


_PROVIDERS: dict[str, Provider] = {}


def provider(name: str, *, hosts: tuple[str, ...], order: int) -> Callable[[Finder], Finder]:
    """Register the decorated function as the finder of the provider ``name``."""
    if not hosts or any(not h or h != h.lower() for h in hosts):
        # lookups lower-case the domain and hosts they are given: a suffix must be lower case
        raise ValueError(f"provider {name!r} needs non-empty, lower-case host suffixes: {hosts}")

    def add(find: Finder) -> Finder:
        if name in _PROVIDERS:
            raise ValueError(f"provider {name!r} is registered twice")
        _PROVIDERS[name] = Provider(name, tuple(hosts), find, order)
        return find

    return add


def providers() -> dict[str, Provider]:
    """Every registered provider by name, in the order they are matched."""
    ranked = sorted(_PROVIDERS.values(), key=lambda p: (p.order, p.name))
    return {p.name: p for p in ranked}
