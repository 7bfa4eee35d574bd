"""Where bounce format decoders register themselves (``@register``), in the order tried.

A decoder takes a parsed report and returns what it found (a :class:`~..model.Rising` with one
record per failed recipient) or None when the report is not in its format. ``order`` places it
in the default order (lower first: formats that are cheap to rule out and specific go early);
the Subject table of ``formats/__init__.py`` may move it ahead for a report whose Subject it
names. Adding a format: docs/adding-a-bounce-format.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..model import Message, Rising

Decoder = Callable[[Message], Rising | None]


@dataclass(frozen=True)
class Format:
    """One registered decoder."""

    name: str
    decode: Decoder
    order: int


_FORMATS: dict[str, Format] = {}


def register(name: str, *, order: int) -> Callable[[Decoder], Decoder]:
    """Register the decorated function as the decoder of the format ``name``."""

    def add(decode: Decoder) -> Decoder:
        if name in _FORMATS:
            raise ValueError(f"bounce format {name!r} is registered twice")
        _FORMATS[name] = Format(name, decode, order)
        return decode

    return add


def decoders() -> dict[str, Decoder]:
    """Every registered decoder by name, in the default order."""
    ranked = sorted(_FORMATS.values(), key=lambda f: (f.order, f.name))
    return {f.name: f.decode for f in ranked}
