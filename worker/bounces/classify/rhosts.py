"""Reasons specific to large mailbox providers, chosen by recipient domain or remote host.

Providers document their own error codes (Gmail's, Microsoft's AS/S codes,
Orange's OFR_/LPN labels, Spectrum's AUP#...); these tables come from Sisimai's
``rhost`` package (go-sisimai, BSD 2-Clause License, Copyright (C) 2014
azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from . import rhost_google, rhost_microsoft
from . import rhost_tables as t
from .codes import valid_reply, valid_status
from .reasons import Fact
from .text import contains_any, first_reason, select

__all__ = ["find_rhost_reason", "provider_of"]

_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Aol", (".mail.aol.com", ".mx.aol.com")),
    ("Apple", (".mail.icloud.com", ".apple.com", ".me.com")),
    ("Cloudflare", (".mx.cloudflare.net",)),
    ("Cox", ("cox.net",)),
    ("Facebook", (".facebook.com",)),
    ("FrancePTT", (".laposte.net", ".orange.fr", ".wanadoo.fr")),
    ("GoDaddy", ("smtp.secureserver.net", "mailstore1.secureserver.net")),
    ("Google", ("aspmx.l.google.com", "gmail-smtp-in.l.google.com")),
    ("GSuite", ("googlemail.com",)),
    ("IUA", (".email.ua",)),
    ("KDDI", (".ezweb.ne.jp", "msmx.au.com")),
    ("MessageLabs", (".messagelabs.com",)),
    (
        "Microsoft",
        (".prod.outlook.com", ".protection.outlook.com", ".onmicrosoft.com", ".exchangelabs.com"),
    ),
    ("Mimecast", (".mimecast.com",)),
    ("NTTDOCOMO", ("mfsmax.docomo.ne.jp",)),
    ("Outlook", (".hotmail.com",)),
    ("Spectrum", ("charter.net",)),
    ("Tencent", (".qq.com",)),
    ("YahooInc", (".yahoodns.net",)),
)


def provider_of(fo: Fact) -> str:
    """Return the provider name for a recipient domain, remote host or local host."""
    return _provider(fo.destination.lower(), fo.rhost.lower(), fo.lhost.lower())


@lru_cache(maxsize=4096)
def _provider(domain: str, rhost: str, lhost: str) -> str:
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


def _google(fo: Fact) -> str:
    if not fo.diagnostic or not valid_reply(fo.reply_code) or not valid_status(fo.status):
        return ""
    status, reply, issued = fo.status[2:], fo.reply_code[1:], fo.diagnostic.lower()
    for reason, code, dsn, text in rhost_google.GOOGLE:
        # Sisimai compares only the tail of both codes (421 and 521 look alike here)
        if text in issued and code.find(reply) >= 1 and dsn.find(status) >= 2:
            return reason
    return ""


def _gsuite(fo: Fact) -> str:
    if not fo.diagnostic:
        return ""
    sc, rc = fo.status[:1], fo.reply_code[:1]
    for reason, needles in rhost_google.GSUITE:
        if not contains_any(fo.diagnostic, needles):
            continue
        if reason == "networkerror" and "5" in (sc, rc):
            continue
        if reason == "hostunknown" and (sc in ("4", "") or rc in ("4", "")):
            continue
        return reason
    return ""


def _microsoft(fo: Fact) -> str:
    if not fo.diagnostic or not valid_status(fo.status):
        return ""
    status, issued = fo.status, fo.diagnostic.lower()
    third = int(status.split(".")[2])
    for reason, code, low, high, text in rhost_microsoft.MICROSOFT:
        if low == high:
            if status != code:
                continue
        else:
            if code not in status or not low or not high:
                continue
            if third < int(low) or third > int(high):
                continue
        if text in issued:
            return reason
    for label, (reply, reason) in rhost_microsoft.MICROSOFT_CODES.items():
        if label in fo.diagnostic and fo.reply_code == reply:
            return reason
    return ""


def _francetpp(fo: Fact) -> str:
    if not fo.diagnostic:
        return ""
    issued = fo.diagnostic.replace("_", "-").lower()
    for label in ("lpn", "lpnaaa", "ofr", "ouk"):
        idx = issued.rfind(label)
        if idx < 0:
            continue
        if label + "-" in issued:
            label += "-"
        word = issued[idx + len(label) - 1 :].split(" ", 1)[0]
        for code, reason in t.FRANCEPTT.items():
            if word.endswith(code):
                return reason
        break
    return "authfailure" if "spf/dns de votre nom de domaine" in issued else ""


def _nttdocomo(fo: Fact) -> str:
    if not fo.diagnostic:
        return ""
    status, issued = fo.status, fo.diagnostic.lower()
    if status in ("5.1.1", "5.0.911"):
        return "userunknown"
    if status == "5.2.0":
        return "filtered"
    found = first_reason(t.NTTDOCOMO, issued)
    if found or status != "5.0.0":
        return found
    # A docomo rejection at DATA is its per-user filter, at RCPT an unknown user
    return {"RCPT": "userunknown", "DATA": "rejected"}.get(fo.command, "")


def _lowered(table: tuple[tuple[str, tuple[str, ...]], ...]) -> Callable[[Fact], str]:
    def find(fo: Fact) -> str:
        return first_reason(table, fo.diagnostic.lower()) if fo.diagnostic else ""

    return find


def _as_is(table: tuple[tuple[str, tuple[str, ...]], ...]) -> Callable[[Fact], str]:
    def find(fo: Fact) -> str:
        return first_reason(table, fo.diagnostic) if fo.diagnostic else ""

    return find


def _mimecast(fo: Fact) -> str:
    if not fo.diagnostic or not valid_reply(fo.reply_code):
        return ""
    issued = fo.diagnostic.lower()
    for reason, reply, text in t.MIMECAST:
        if fo.reply_code == reply and text in issued:
            return reason
    return ""


def _spectrum(fo: Fact) -> str:
    label = select(fo.diagnostic, "AUP#", None) if fo.diagnostic else ""
    digits = ""
    for ch in label:
        if len(digits) == 4:
            break
        digits = digits + ch if ch.isdigit() else ""
    if len(digits) != 4:
        return ""
    number = int(digits)
    for low, high, reason in t.SPECTRUM:
        if digits == low:
            return reason
        if high and int(low) <= number <= int(high):
            return reason
    return ""


def _cox(fo: Fact) -> str:
    if not fo.diagnostic:
        return ""
    code = select(fo.diagnostic + " ", "AUP#", " ")
    if code in t.COX_CODES:
        return t.COX_CODES[code]
    return first_reason(t.COX, fo.diagnostic.lower())


def _facebook(fo: Fact) -> str:
    text = fo.diagnostic
    idx = text.find("-")
    if idx < 3:
        return ""
    label = text[idx - 3 : idx + 3]
    for reason, labels in t.FACEBOOK:
        if label in labels:
            return reason
    return ""


def _godaddy(fo: Fact) -> str:
    if not fo.diagnostic:
        return ""
    label = "IB" + select(fo.diagnostic, " IB", " ")
    if label in t.GODADDY_CODES:
        return t.GODADDY_CODES[label]
    return first_reason(t.GODADDY, fo.diagnostic.lower())


def _iua(fo: Fact) -> str:
    code = select(fo.diagnostic.lower(), ".i.ua/err/", "/") if fo.diagnostic else ""
    return t.IUA.get(code, "")


_FINDERS: dict[str, Callable[[Fact], str]] = {
    "Aol": _as_is(t.AOL),
    "Apple": _lowered(t.APPLE),
    "Cloudflare": _as_is(t.CLOUDFLARE),
    "Cox": _cox,
    "Facebook": _facebook,
    "FrancePTT": _francetpp,
    "GoDaddy": _godaddy,
    "Google": _google,
    "GSuite": _gsuite,
    "IUA": _iua,
    "KDDI": _lowered(t.KDDI),
    "MessageLabs": _as_is(t.MESSAGELABS),
    "Microsoft": _microsoft,
    "Mimecast": _mimecast,
    "NTTDOCOMO": _nttdocomo,
    "Outlook": _as_is(t.OUTLOOK),
    "Spectrum": _spectrum,
    "Tencent": _lowered(t.TENCENT),
    "YahooInc": _lowered(t.YAHOOINC),
}


def find_rhost_reason(fo: Fact) -> str:
    """Return a provider-specific reason, or '' when the provider is unknown or silent."""
    name = provider_of(fo)
    return _FINDERS[name](fo) if name else ""
