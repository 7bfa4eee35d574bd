"""Email addresses, host names and Received: headers as bounce messages write them.

Ported from Sisimai's ``address``, ``rfc1123``, ``rfc791`` and ``rfc5322``
packages (go-sisimai, BSD 2-Clause License, Copyright (C) 2014 azumakuniyuki and
the sisimai development team).  Bounces quote addresses in every possible shape
(``<a@b>``, ``"a@b":``, ``rfc822;a@b``), so the extraction is deliberately lenient.
"""

from __future__ import annotations

import re

from .text import aligned, select, short_cache

__all__ = [
    "final_address",
    "find_address",
    "find_host",
    "is_domain_literal",
    "is_email_address",
    "is_internet_host",
    "parse_received",
]

_IPV4_FIND = re.compile(r"(?<![0-9])(?:\d{1,3}\.){3}\d{1,3}(?![0-9])")
_HOST_CHARS = frozenset("-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOCAL_BAD = frozenset(",@:;()<>[]")


def find_ipv4(text: str) -> list[str]:
    """Return the IPv4 addresses found in ``text``."""
    out = []
    for m in _IPV4_FIND.finditer(text):
        if all(int(o) < 256 for o in m.group(0).split(".")):
            out.append(m.group(0))
    return out


def is_ipv4(text: str) -> bool:
    """Return True when ``text`` is exactly an IPv4 address."""
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


@short_cache
def is_internet_host(host: str) -> bool:
    """Return True for a valid Internet host name (RFC 1123, TLD must not be numeric)."""
    if len(host) < 3 or len(host) > 255:  # "a.b": anonymised reports use such names
        return False
    if host in ("localhost", "localhost6"):
        return True
    if "." not in host or ".." in host or host[0] in ".-" or host.endswith("-"):
        return False
    if "--" in host and not host.startswith("xn--"):
        return False
    if not set(host.upper()) <= _HOST_CHARS:
        return False
    tld = host[host.rfind(".") + 1 :]
    return len(tld) <= 63 and not any(c.isdigit() for c in tld)


def is_domain_literal(email: str) -> bool:
    """Return True for an address whose domain is ``[IPv4:...]`` or ``[IPv6:...]``."""
    email = email.strip("<>")
    if len(email) < 16 or not email.endswith("]"):
        return False
    if "@[IPv4:" in email:
        return is_ipv4(select(email, "@[IPv4:", "]"))
    if "@[IPv6:" in email:
        cv = select(email, "@[IPv6:", "]")
        return len(cv) > 2 and cv.count(":") > 2
    return False


@short_cache
def is_email_address(email: str) -> bool:
    """Return True for something that looks like a deliverable address (lenient RFC 5322)."""
    if len(email) < 5:
        return False
    email = email.strip(" \t")
    lasta = email.rfind("@")
    if len(email) > 254 or lasta < 1 or lasta > 64 or len(email) - lasta > 253:
        return False
    quoted = email.startswith('"') and '"@' in email
    if not quoted and (email.count("@") > 1 or email.find(" ") > 0):
        return False
    local, domain = email[:lasta], email[lasta + 1 :]
    for i, ch in enumerate(local):
        o = ord(ch)
        if o < 32 or o > 126:
            return False
        if i == 0:
            continue
        if quoted:
            if local[i - 1] == "\\":
                if ch not in '\\"':
                    return False
            elif ch == '"' and i + 1 < lasta:
                return False
        elif ch in _LOCAL_BAD:
            return False
    literal = is_domain_literal(email)
    lastd = email.rfind(".") - lasta - 1
    for j, ch in enumerate(domain):
        o = ord(ch)
        if o < 45 or ch in "/\\" or o > 122:
            return False
        if not literal:
            if 57 < o < 64 or 90 < o < 97:
                return False
            if j > lastd and not ch.isalpha():
                return False
        elif 59 < o < 64 or 93 < o < 97:
            return False
    return literal or is_internet_host(domain)


def final_address(text: str) -> str:
    """Strip angle brackets from an address (sendmail's ruleset 4)."""
    if text.count("@") != 1:
        return text
    text = text.strip("<>")
    at = text.rfind("@")
    user, host = text[:at], text[at + 1 :]
    if not (text.startswith('"') and '"@' in text):
        user = user.replace("<", "").replace(">", "")
    return user + "@" + host.replace("<", "").replace(">", "")


def _clean(candidate: str) -> str:
    if not is_domain_literal(candidate):
        candidate = candidate.strip("[]{}()`';.")
    candidate = final_address(candidate.strip("<>"))
    if not (candidate.startswith('"') and '"@' in candidate):
        candidate = candidate.strip('"')
    return candidate.strip(".")


@short_cache
def find_address(text: str) -> str:
    """Return the first email address in ``text`` (``"Name" <a@b>``, ``a@b``, ``<a@b>:``)."""
    if len(text) < 5:
        return ""
    text = text.replace("\r", "").replace("\n", "")
    # An address in angle brackets wins, as in a display-name address
    p0 = text.find("<")
    while p0 > -1:
        p1 = text.find(">", p0 + 1)
        if p1 < 0:
            break
        inner = text[p0 + 1 : p1]
        if "(" in inner and ")" in inner and '"' not in inner:
            inner = re.sub(r"\([^()]*\)", "", inner)
        cand = _clean(inner)
        if is_email_address(cand):
            return cand
        lower = inner.lower()
        if lower in ("mailer-daemon", "postmaster"):
            return inner
        p0 = text.find("<", p1 + 1)
    for token in re.split(r"[\s,]+", text):
        if "@" not in token or (token.find("@") < 1 and not token.startswith(("<", '"', "("))):
            continue
        token = re.sub(r"\([^()]*\)", "", token)
        cand = _clean(token.strip(":"))
        if len(cand) >= 5 and is_email_address(cand):
            return cand
    return ""


_PREFIX32 = ("(", "[", "<")
_SUFFIX32 = (")", "]", ">", ":", ";")
_SANDWICHED = (
    ("host ", " said: "),
    ("host ", " talk to me: "),
    ("while talking to ", ":"),
    ("host ", " ["),
    (" by ", ". ["),
    ("delivery failed for the following reason: ", " with"),
    ("remote system: ", "("),
    ("smtp server <", ">"),
    ("-mta: ", ">"),
    (" : ", "["),
)
_STARTAFTER = ("generating server: ", "serveur de g", "server di generazione", "genererande server")
_EXISTUNTIL = (" did not like our ",)


@short_cache
def find_host(text: str) -> str:
    """Return the (longest) Internet host name mentioned in an error message."""
    if not text:
        return ""
    source = text.lower()
    for p in _PREFIX32:
        source = source.replace(p, " " + p)
    for p in _SUFFIX32:
        source = source.replace(p, p + " ")
    tokens: list[str] = []
    for left, right in _SANDWICHED:
        if not aligned(source, (left, right)):
            continue
        p1, p2 = source.find(left), source.find(right)
        if p1 + len(left) >= p2:
            continue
        tokens = source[p1 + len(left) : p2].split(" ")
        break
    if not tokens:
        for mark in _STARTAFTER:
            if mark in source:
                tokens = source[source.find(mark) + len(mark) :].split(" ")
                break
    if not tokens:
        for mark in _EXISTUNTIL:
            if mark in source:
                tokens = source[: source.find(mark)].split(" ")
                break
    if not tokens:
        tokens = source.split(" ")
    found: list[str] = []
    for tok in tokens:
        tok = tok.rstrip(".")
        for p in _PREFIX32 + _SUFFIX32:
            tok = tok.replace(p, "")
        if len(tok) < 4 or "." not in tok or not is_internet_host(tok):
            continue
        found.append(tok)
    if not found:
        return ""
    best = found[0]
    for tok in found[1:]:
        if len(tok) > len(best):
            best = tok
    return best


_RECEIVED_LABELS = ("from", "by", "via", "with", "id", "for")


@short_cache
def _received(value: str) -> tuple[tuple[str, str], ...]:
    return tuple(_parse_received(value).items())


def parse_received(value: str) -> dict[str, str]:
    """Split a Received: header into from/by/via/with/id/for tokens (Sisimai's rules)."""
    return dict(_received(value))


def _parse_received(value: str) -> dict[str, str]:
    """Split a Received: header into from/by/via/with/id/for tokens (Sisimai's rules)."""
    token: dict[str, str] = {}
    if " " not in value or " invoked by uid" in value or " invoked from network" in value:
        return token
    words = value.split(" ")
    for j, word in enumerate(words):
        label = word.lower()
        if label not in _RECEIVED_LABELS or j + 1 > len(words) - 1:
            continue
        v = words[j + 1].lower()
        for ch in "();":
            v = v.replace(ch, "")
        token[label] = v
    for label in ("from", "by"):
        v = token.get(label, "")
        if v.startswith("["):
            ips = find_ipv4(v)
            token[label] = ips[0] if ips else ""
    frm = token.get("from", "")
    keep = frm not in ("localhost", "localhost.localdomain") and "." in frm and not find_ipv4(frm)
    if not keep and "." in frm:
        # Sisimai's alternative-name lookup never finds one, so an IP address is dropped
        token["from"] = ""
    if token.get("for"):
        token["for"] = token["for"].strip("<>")
    out = {}
    for label in _RECEIVED_LABELS:
        v = token.get(label, "")
        if not v or " " in v:
            continue
        out[label] = v.replace("[", "", 1).replace("]", "", 1)
    return out
