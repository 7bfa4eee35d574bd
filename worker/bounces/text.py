"""Small string helpers shared by the bounce decoders.

The decoders are a Python reimplementation of the patterns used by Sisimai
(https://libsisimai.org/, go-sisimai, BSD 2-Clause License, Copyright (C) 2014
azumakuniyuki and the sisimai development team).  These helpers mirror the
semantics of Sisimai's ``moji`` package so that the ported patterns behave the
same way (for example ``select`` cuts text between two markers, ``aligned``
checks that substrings appear in order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "aligned",
    "aligned_any",
    "contains_any",
    "is_contained",
    "only_digits",
    "select",
    "squeeze",
    "startswith_any",
    "sweep",
]


def squeeze(text: str, char: str = " ") -> str:
    """Collapse runs of ``char`` into a single ``char``."""
    double = char + char
    while double in text:
        text = text.replace(double, char)
    return text


def sweep(text: str) -> str:
    """Trim, collapse spaces and cut a trailing MIME boundary (`` --xyz``)."""
    if not text:
        return ""
    text = squeeze(text.replace("\t", " ").strip(), " ")
    # A " --" without a "-- " is the start of a boundary string glued to the message
    while " --" in text:
        if "-- " in text:
            break
        text = text[: text.index(" --")]
    return text


def only_digits(text: str) -> bool:
    """Return True when ``text`` is a non-empty run of ASCII digits."""
    return bool(text) and text.isascii() and text.isdigit()


def aligned(text: str, parts: Sequence[str]) -> bool:
    """Return True when every element of ``parts`` occurs in ``text`` in that order."""
    if not text or not parts:
        return False
    pos = 0
    for part in parts:
        found = text.find(part, pos)
        if found < 0:
            return False
        # Sisimai restarts the search one character after the end of the previous match
        pos = found + len(part)
    return True


def aligned_any(text: str, table: Iterable[Sequence[str]]) -> bool:
    """Return True when any sequence of ``table`` is aligned in ``text``."""
    return bool(text) and any(aligned(text, parts) for parts in table)


def contains_any(text: str, needles: Iterable[str]) -> bool:
    """Return True when ``text`` contains any of ``needles``."""
    # map() over the bound method keeps the loop in C, which matters for the long tables
    return bool(text) and any(map(text.__contains__, needles))


def first_reason(table: Iterable[tuple[str, Iterable[str]]], text: str) -> str:
    """The reason of the first ``(reason, needles)`` row whose needles occur in ``text``."""
    for reason, needles in table:
        if contains_any(text, needles):
            return reason
    return ""


def startswith_any(text: str, prefixes: Iterable[str]) -> bool:
    """Return True when ``text`` starts with any of ``prefixes``."""
    if not text:
        return False
    return text.startswith(prefixes if isinstance(prefixes, tuple) else tuple(prefixes))


def is_contained(needle: str, haystacks: Iterable[str]) -> bool:
    """Return True when any element of ``haystacks`` contains ``needle``."""
    return bool(needle) and any(needle in h for h in haystacks)


def select(text: str, begin: str | None, until: str | None, start: int = 0) -> str:
    """Return the text between ``begin`` and ``until`` (None means start/end of text).

    Like Sisimai's ``moji.Select`` the search for ``until`` starts one character after
    the end of ``begin``, so the selected text is never empty when found.
    """
    if not text or start < 0:
        return ""
    if start > 0:
        if start > len(text) - 2:
            return ""
        text = text[start:]
    lb = len(begin) if begin else 0
    lu = len(until) if until else 0
    if len(text) < 2 or len(text) < lb + lu:
        return ""
    if begin:
        p1 = text.find(begin)
        if p1 < 0:
            return ""
        head = p1 + lb
    else:
        head = 0
    if until is None:
        return text[head:] if head < len(text) else ""
    p2 = text.find(until, head + 1)
    if p2 < 0:
        return ""
    return text[head:p2]
