"""What may go into a message header: the rules validation applies, shared with the builder.

RFC 5322 §2.1.1: a line is at most 998 characters; §2.2: a header field is a name (printable
ASCII but the colon) and an unstructured value of printable characters and white space, folded
only at white space. Text that ends up in a header (the subject, display names, extra header
values, attachment file names) holds no control character: CR and LF would start a header of
their own, and Python's ``str.splitlines`` (which the stdlib's header folding uses) also breaks
lines at VT, FF, FS, GS, RS, NEL and U+2028/U+2029.
"""

from __future__ import annotations

import re

#: RFC 5322 §2.1.1: a line is at most 998 characters (plus CRLF)
MAX_LINE = 998
#: an extra header's value: at most one line's worth before folding
MAX_HEADER_VALUE = 998
#: a header name: RFC 5322 §3.6.8 ftext (printable ASCII but the colon); 76 keeps it on a line
HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")
#: every character that breaks or hides a line: C0 controls but TAB, DEL, NEL, U+2028, U+2029
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_WORD = re.compile(r"[^ \t]+")


def header_text(value: str) -> str:
    """``value`` when it may stand in a header; ValueError naming what it holds otherwise."""
    # isprintable() is False for every control character (and for some harmless ones: TAB,
    # non-ASCII spaces, format characters), so only those values are searched
    if value.isprintable() or _CONTROL.search(value) is None:
        return value
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError("must not contain CR, LF or NUL (header injection)")
    raise ValueError("must not contain control characters or line separators")


def without_controls(value: str) -> str:
    """``value`` with every line-breaking character replaced by a space (the builder's guard)."""
    if value.isprintable():
        return value
    return _CONTROL.sub(" ", value)


def header_name(name: str) -> str:
    """A valid header field name, or ValueError."""
    if not HEADER_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid header name")
    return name


def longest_word(value: str) -> int:
    """The longest run of characters without white space: where a folded line cannot break."""
    return max((len(w) for w in _WORD.findall(value)), default=0)


def check_header(name: str, value: str) -> str:
    """An extra header's value that folds into lines of at most 998 characters; the ValueError
    completes "header NAME ..."."""
    header_text(value)
    if len(value) > MAX_HEADER_VALUE:
        raise ValueError(f"is longer than {MAX_HEADER_VALUE} characters")
    if (
        len(name) + 2 + len(value) > MAX_LINE  # else the whole value fits on its line
        and value.isascii()
        and len(name) + 2 + longest_word(value) > MAX_LINE
    ):
        # folding breaks lines at white space only; encoded words would change the meaning of a
        # structured field
        raise ValueError(
            f"has a word of {longest_word(value)} characters without white space: it cannot be "
            f"folded into lines of {MAX_LINE}"
        )
    return value
