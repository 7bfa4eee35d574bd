"""Small string helpers shared by the bounce decoders.

The decoders are a Python reimplementation of the patterns used by Sisimai
(https://libsisimai.org/, go-sisimai, BSD 2-Clause License, Copyright (C) 2014
azumakuniyuki and the sisimai development team).  These helpers mirror the
semantics of Sisimai's ``moji`` package so that the ported patterns behave the
same way (for example ``select`` cuts text between two markers, ``aligned``
checks that substrings appear in order).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

__all__ = [
    "aligned",
    "aligned_any",
    "append_capped",
    "contains_any",
    "is_contained",
    "only_digits",
    "select",
    "short_cache",
    "squeeze",
    "startswith_any",
    "sweep",
]


#: longest text a decoder gathers for one field from many lines (see append_capped)
FIELD_MAX = 8192


_R = TypeVar("_R")
#: longest argument short_cache keeps: a cache keyed by whole header values or error texts would
#: hold megabytes per entry of what a hostile report sends
CACHE_KEY_MAX = 1024


def short_cache(func: Callable[[str], _R]) -> Callable[[str], _R]:
    """``lru_cache`` for short arguments only; longer ones are computed and not kept."""
    cached = functools.lru_cache(maxsize=8192)(func)

    @functools.wraps(func)
    def wrapper(text: str) -> _R:
        return cached(text) if len(text) <= CACHE_KEY_MAX else func(text)

    return wrapper


def squeeze(text: str, char: str = " ") -> str:
    """Collapse runs of ``char`` into a single ``char``."""
    if char + char not in text:
        return text
    return re.sub(re.escape(char) + "{2,}", lambda _: char, text)


def append_capped(text: str, more: str, limit: int = FIELD_MAX) -> str:
    """``text + more`` cut at ``limit`` characters.

    Decoders gather a field line by line; appending to an unbounded string copies all of it at
    every line (quadratic in the report's size), while a capped one costs at most ``limit``.
    """
    if len(text) >= limit:
        return text
    joined = text + more
    return joined if len(joined) <= limit else joined[:limit]


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
