"""SMTP enhanced status codes (RFC 3463), reply codes (RFC 5321) and commands.

Ported from Sisimai's ``smtp/status``, ``smtp/reply``, ``smtp/command`` and
``smtp/failure`` packages (go-sisimai, BSD 2-Clause License, Copyright (C) 2014
azumakuniyuki and the sisimai development team): which code is picked from a
free-text error message decides the reported status and reply code, so the
selection rules follow Sisimai's closely.
"""

from __future__ import annotations

import re

__all__ = [
    "PSEUDO_PERMANENT",
    "PSEUDO_TEMPORARY",
    "find_command",
    "find_reply",
    "find_status",
    "is_command",
    "is_hard_bounce",
    "is_permanent",
    "is_temporary",
    "prefer_status",
    "pseudo_status",
    "reason_of_status",
    "valid_reply",
    "valid_status",
]

_IPV4 = re.compile(r"(?<![0-9.])(?:\d{1,3}\.){3}\d{1,3}(?![0-9])")

# Pseudo status codes Sisimai reports when a bounce carries no status code.
PSEUDO_PERMANENT: dict[str, str] = {
    "authfailure": "5.0.926",
    "badreputation": "5.0.975",
    "blocked": "5.0.971",
    "contenterror": "5.0.960",
    "exceedlimit": "5.0.923",
    "expired": "5.0.947",
    "failedstarttls": "5.0.976",
    "filtered": "5.0.910",
    "hasmoved": "5.0.916",
    "hostunknown": "5.0.912",
    "mailboxfull": "5.0.922",
    "mailererror": "5.0.939",
    "mesgtoobig": "5.0.934",
    "networkerror": "5.0.944",
    "norelaying": "5.0.909",
    "notaccept": "5.0.932",
    "notcompliantrfc": "5.0.974",
    "onhold": "5.0.901",
    "policyviolation": "5.0.972",
    "rejected": "5.0.918",
    "requireptr": "5.0.973",
    "securityerror": "5.0.970",
    "spamdetected": "5.0.980",
    "speeding": "5.0.946",
    "suppressed": "5.0.903",
    "suspend": "5.0.921",
    "systemerror": "5.0.930",
    "systemfull": "5.0.931",
    "syntaxerror": "5.0.902",
    "toomanyconn": "5.0.945",
    "userunknown": "5.0.911",
    "undefined": "5.0.900",
    "virusdetected": "5.0.981",
}
PSEUDO_TEMPORARY: dict[str, str] = {
    k: "4" + v[1:]
    for k, v in PSEUDO_PERMANENT.items()
    if k not in ("hasmoved", "hostunknown", "userunknown")
}
PSEUDO_TEMPORARY["filtered"] = "4.0.924"

_STATUS_REASON: dict[str, str] = {
    "2.1.5": "delivered",
    "4.1.6": "hasmoved",
    "4.1.7": "rejected",
    "4.1.8": "rejected",
    "4.1.9": "systemerror",
    "4.2.1": "blocked",
    "4.2.2": "mailboxfull",
    "4.2.3": "exceedlimit",
    "4.2.4": "filtered",
    "4.3.1": "systemfull",
    "4.3.2": "notaccept",
    "4.3.3": "systemerror",
    "4.3.5": "systemerror",
    "4.4.1": "expired",
    "4.4.2": "networkerror",
    "4.4.3": "systemerror",
    "4.4.4": "networkerror",
    "4.4.5": "systemfull",
    "4.4.6": "networkerror",
    "4.4.7": "expired",
    "4.4.8": "networkerror",
    "4.5.3": "systemerror",
    "4.5.5": "systemerror",
    "4.6.0": "contenterror",
    "4.6.2": "contenterror",
    "4.6.5": "contenterror",
    "4.7.1": "blocked",
    "4.7.2": "blocked",
    "4.7.5": "securityerror",
    "4.7.6": "securityerror",
    "4.7.7": "securityerror",
    "4.7.12": "securityerror",
    "4.7.15": "securityerror",
    "4.7.16": "mesgtoobig",
    "4.7.24": "authfailure",
    "4.7.25": "requireptr",
    "4.7.26": "authfailure",
    "5.1.0": "userunknown",
    "5.1.1": "userunknown",
    "5.1.2": "hostunknown",
    "5.1.3": "userunknown",
    "5.1.4": "filtered",
    "5.1.6": "hasmoved",
    "5.1.7": "rejected",
    "5.1.8": "rejected",
    "5.1.9": "systemerror",
    "5.1.10": "notaccept",
    "5.2.0": "filtered",
    "5.2.1": "filtered",
    "5.2.2": "mailboxfull",
    "5.2.3": "exceedlimit",
    "5.2.4": "filtered",
    "5.3.0": "systemerror",
    "5.3.1": "systemfull",
    "5.3.2": "notaccept",
    "5.3.3": "systemerror",
    "5.3.4": "mesgtoobig",
    "5.3.5": "systemerror",
    "5.4.0": "networkerror",
    "5.4.3": "systemerror",
    "5.4.4": "hostunknown",
    "5.5.2": "syntaxerror",
    "5.5.3": "toomanyconn",
    "5.5.4": "systemerror",
    "5.5.5": "systemerror",
    "5.5.6": "syntaxerror",
    "5.6.0": "contenterror",
    "5.6.1": "contenterror",
    "5.6.2": "contenterror",
    "5.6.3": "contenterror",
    "5.6.5": "contenterror",
    "5.6.6": "contenterror",
    "5.6.7": "contenterror",
    "5.6.8": "contenterror",
    "5.6.9": "contenterror",
    "5.7.13": "suspend",
    "5.7.16": "mesgtoobig",
    "5.7.17": "hasmoved",
    "5.7.18": "hasmoved",
    "5.7.20": "authfailure",
    "5.7.21": "authfailure",
    "5.7.22": "authfailure",
    "5.7.23": "authfailure",
    "5.7.24": "authfailure",
    "5.7.25": "requireptr",
    "5.7.26": "authfailure",
    "5.7.27": "notaccept",
    "5.7.28": "spamdetected",
    "5.7.29": "authfailure",
    "5.7.30": "failedstarttls",
}
for _n in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 15, 19):
    _STATUS_REASON.setdefault(f"5.7.{_n}", "securityerror")


def valid_status(code: str) -> bool:
    """Return True for a syntactically valid enhanced status code such as 5.7.26."""
    if not 5 <= len(code) <= 7:
        return False
    parts = code.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return False
    klass, subject = int(parts[0]), int(parts[1])
    return klass in (2, 4, 5) and 0 <= subject <= 7


def reason_of_status(code: str) -> str:
    """Return the reason Sisimai associates with an enhanced status code, or ''."""
    if len(code) < 5 or not valid_status(code):
        return ""
    return _STATUS_REASON.get(code, "")


def pseudo_status(reason: str, temporary: bool) -> str:
    """Return Sisimai's pseudo status code (X.0.9NN) for a reason."""
    if len(reason) < 6:
        return ""
    return (PSEUDO_TEMPORARY if temporary else PSEUDO_PERMANENT).get(reason, "")


def find_status(text: str, hint: str = "") -> str:
    """Return the enhanced status code found in ``text`` (``hint`` restricts the class)."""
    if len(text) < 7:
        return ""
    first = hint[:1]
    classes = (first + ".",) if first in ("2", "4", "5") else ("5.", "4.", "2.")
    s = " " + text + "   "
    if "." in text:
        s = _IPV4.sub("***.***.***.***", s)
    found: list[tuple[int, str]] = []
    for klass in classes:
        pos = s.find(klass)
        while pos > -1:
            found.append((pos, klass))
            pos = s.find(klass, pos + 5)
    if not found:
        return ""
    found.sort()
    size = len(s)
    codes: list[str] = []
    another = ""
    for ci, klass in found:
        prev = s[ci - 1] if ci > 0 else ""
        if prev and ("." <= prev <= "9" or prev in "Vv"):
            continue  # part of a number, a version string ("v4.2.1")
        if size <= ci + 4:
            continue
        subject, sep = s[ci + 2], s[ci + 3]
        if not "0" <= subject <= "7" or sep != ".":
            continue
        d1 = s[ci + 4] if size > ci + 4 else ""
        if not d1.isdigit():
            continue
        code = klass + subject + "." + d1
        if code[1:] == ".0.0" or code == "4.4.7":
            # X.0.0 and 4.4.7 say little; keep them only as a last resort
            another = code
            continue
        d2 = s[ci + 5] if size > ci + 5 else ""
        if not d2.isdigit():
            codes.append(code)
            continue
        d3 = s[ci + 6] if size > ci + 6 else ""
        if not d3.isdigit():
            codes.append(code + d2)
            continue
        d4 = s[ci + 7] if size > ci + 7 else ""
        if d4.isdigit():
            continue
        codes.append(code + d2 + d3)
    if another:
        codes.append(another)
    if not codes:
        return ""
    chosen = codes[0]
    for code in codes[1:]:
        chosen = prefer_status(chosen, code, "")
    return chosen


def prefer_status(field: str, inmesg: str, reply: str) -> str:
    """Choose between the Status: value and a code found in the message (Sisimai's rules)."""
    if not field:
        return inmesg
    if not inmesg:
        return field
    if len(field) < 5:
        return inmesg
    if len(inmesg) < 5:
        return field
    r = reply[:1] or "0"
    if field[0] != inmesg[0]:
        if r == field[0]:
            return field
        if r == inmesg[0]:
            return inmesg
    if field == inmesg:
        return field
    z1 = (field.find(".0"), inmesg.find(".0"))
    z2 = (field.find(".0.0"), inmesg.find(".0.0"))
    if z2[0] > 0:
        return inmesg if z2[1] < 0 else field
    if z1[0] > 0 and z1[1] < 0:
        return inmesg
    if z2[1] > 0:
        return field
    if field in ("4.4.7", "4.7.0") or field.startswith("5.3."):
        return inmesg
    if field[1:5] in (".5.1", ".5.2", ".5.4", ".5.5"):
        return inmesg
    if field == "5.1.1":
        if z1[1] > 0 or inmesg.startswith("5.5."):
            return field
        return inmesg
    if field == "5.1.3" and inmesg.startswith("5.7."):
        return inmesg
    return field


_REPLY2 = ("211", "214", "220", "221", "235", "250", "251", "252", "253", "334", "354")
_REPLY4 = ("421", "450", "451", "452", "422", "430", "432", "453", "454", "455", "458", "459")
_REPLY5 = (
    "550", "552", "553", "551", "521", "525", "523", "524", "530", "533", "534", "535",
    "538", "555", "556", "554", "500", "501", "502", "503", "504",
)  # fmt: skip
_REPLY_BY_CLASS = {"2": _REPLY2, "4": _REPLY4, "5": _REPLY5}
_REPLY_ALL = _REPLY5 + _REPLY4 + _REPLY2


def valid_reply(code: str) -> bool:
    """Return True for a plausible SMTP reply code (211..556)."""
    if len(code) < 3 or not code.isdigit():
        return False
    n = int(code)
    if n < 211 or n > 556 or n % 100 > 59:
        return False
    if n // 100 == 2:
        if n == 235:
            return True
        return not (n > 253 or 221 < n < 250)
    return not (n // 100 == 3 and n not in (334, 354))


def find_reply(text: str, hint: str = "") -> str:
    """Return the SMTP reply code found in ``text`` (``hint`` restricts the class)."""
    if len(text) < 3 or "X-UNIX" in text.upper():
        return ""
    codes = _REPLY_BY_CLASS.get(hint[:1], _REPLY_ALL)
    s = " " + text + " "
    for code in codes:
        count = s.count(code)
        if not count:
            continue
        start = 1
        for _ in range(count):
            idx = s.find(code, start) if start < len(s) else -1
            if idx < 0:
                break
            before, after = s[idx - 1], s[idx + 3]
            if "." <= before <= "9" or "." <= after <= "9":
                # Sisimai advances with this (odd) arithmetic; keep it for identical picks
                start += idx + 3
                continue
            return code
    return ""


_COMMANDS = (
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "QUIT", "RSET", "NOOP", "VRFY", "ETRN",
    "EXPN", "HELP", "AUTH", "STARTTLS", "XFORWARD", "CONN",
)  # fmt: skip
_DETECTABLE = (
    "HELO", "EHLO", "STARTTLS", "AUTH PLAIN", "AUTH LOGIN", "AUTH CRAM-", "AUTH DIGEST-",
    "MAIL F", "RCPT", "RCPT T", "DATA", "QUIT", "XFORWARD",
)  # fmt: skip
EXCEPT_DATA = frozenset(("CONN", "EHLO", "HELO", "MAIL", "RCPT"))


def is_command(text: str) -> bool:
    """Return True when ``text`` contains an SMTP command name."""
    return len(text) >= 4 and any(c in text for c in _COMMANDS)


def find_command(text: str) -> str:
    """Return the last SMTP command named in ``text`` (Sisimai's detection order)."""
    if not is_command(text):
        return ""
    padded = " " + text + " "
    found: list[str] = []
    for name in _DETECTABLE:
        p0 = text.find(name)
        if p0 < 0:
            continue
        if " " not in name:
            # A command glued to letters or digits is part of a word (DATABASE, EMAIL.EXAMPLE)
            before = padded[p0]
            after = padded[p0 + len(name) + 1] if p0 + len(name) + 1 < len(padded) else " "
            if before.isalnum() or before == "@" or after.isalnum() or after == "@":
                continue
        head = name[:4]
        if any(head.startswith(f) for f in found):
            continue
        found.append({"STAR": "STARTTLS", "XFOR": "XFORWARD"}.get(head, head))
    return found[-1] if found else ""


def is_permanent(text: str) -> bool:
    """Return True when ``text`` indicates a permanent (5xx) failure."""
    if not text:
        return False
    code = find_status(text) or find_reply(text)
    return code.startswith("5") or " permanent " in text.lower()


def is_temporary(text: str) -> bool:
    """Return True when ``text`` indicates a temporary (4xx) failure."""
    if not text:
        return False
    code = find_status(text) or find_reply(text)
    lower = text.lower()
    return code.startswith("4") or " temporar" in lower or " persistent" in lower


def is_hard_bounce(reason: str, text: str) -> bool:
    """Return the corpus hard-bounce rule: unknown user/host, moved, permanent notaccept."""
    if reason in ("hasmoved", "userunknown", "hostunknown"):
        return True
    if reason != "notaccept":
        return False
    if not text:
        return True
    code = find_status(text) or find_reply(text)
    return code.startswith("5") or not is_temporary(text)
