"""What a remote SMTP server said, made fit to show to an owner.

A user's SMTP server is the user's input: whatever answers at that address, SMTP or not, would
otherwise have its bytes quoted into Failed Send reasons and the account's status. Only a parsed
SMTP reply is quoted, and only its printable ASCII, within a bounded length; a peer that does
not answer with SMTP replies gets one generic text.
"""

from __future__ import annotations

#: longest server text kept (RFC 5321 section 4.5.3.1.5: a reply line is at most 512 octets)
MAX_TEXT = 300
NOT_SMTP = "the server did not answer as an SMTP server (no valid SMTP reply)"


def printable(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` with anything but printable ASCII as spaces, runs of space folded, truncated."""
    if text.isascii() and text.isprintable() and len(text) <= limit and "  " not in text:
        text = text.strip()
    else:
        text = " ".join("".join(c if " " <= c <= "~" else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_reply_code(code: int) -> bool:
    """Is this a code an SMTP server answers with (2xx to 5xx)?"""
    return 200 <= code <= 599
