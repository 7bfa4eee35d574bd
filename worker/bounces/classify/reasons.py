"""Bounce reason classification from status code, reply code and diagnostic text.

The reason vocabulary, the message patterns and the order in which they are
tried are those of Sisimai's ``reason`` and ``lda`` packages (go-sisimai, BSD
2-Clause License, Copyright (C) 2014 azumakuniyuki and the sisimai development
team).  A hard bounce is only ``userunknown``, ``hostunknown``, ``hasmoved`` and
a permanent ``notaccept`` (see :func:`worker.bounces.classify.codes.is_hard_bounce`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from . import patterns as p
from .codes import EXCEPT_DATA, reason_of_status
from .text import aligned_any, contains_any

__all__ = ["RETRY", "Fact", "find_reason", "is_explicit", "local_agent_reason"]

# Reasons a decoder may set that are checked again against the full message.
RETRY = frozenset(
    (
        "undefined", "onhold", "systemerror", "securityerror", "expired", "networkerror",
        "hostunknown", "userunknown",
    )
)  # fmt: skip


@dataclass(slots=True)
class Fact:
    """The values the classifier looks at for one recipient."""

    reason: str = ""
    status: str = ""
    diagnostic: str = ""
    dtype: str = ""
    command: str = ""
    reply_code: str = ""
    action: str = ""
    destination: str = ""
    rhost: str = ""
    lhost: str = ""


def is_explicit(reason: str) -> bool:
    """Return False for '', 'undefined' and 'onhold'."""
    return reason not in ("", "undefined", "onhold")


def _has(table: tuple[str, ...], pairs: tuple[tuple[str, ...], ...] = ()) -> Callable[[str], bool]:
    def test(mesg: str) -> bool:
        return bool(mesg) and (contains_any(mesg, table) or aligned_any(mesg, pairs))

    return test


def _rejected_text(mesg: str) -> bool:
    if not mesg or contains_any(mesg, p.REJECTED_NOT):
        return False
    return contains_any(mesg, p.REJECTED)


INCLUDED: dict[str, Callable[[str], bool]] = {
    "authfailure": _has(p.AUTHFAILURE, p.AUTHFAILURE_PAIRS),
    "badreputation": _has(p.BADREPUTATION),
    "blocked": _has(p.BLOCKED, p.BLOCKED_PAIRS),
    "contenterror": _has(p.CONTENTERROR),
    "exceedlimit": _has(p.EXCEEDLIMIT),
    "expired": _has(p.EXPIRED, p.EXPIRED_PAIRS),
    "failedstarttls": _has(p.FAILEDSTARTTLS),
    "filtered": _has(p.FILTERED),
    "hasmoved": _has((" has been replaced by ",)),
    "hostunknown": _has(p.HOSTUNKNOWN, (("553 ", " does not exist"),)),
    "mailboxfull": _has(p.MAILBOXFULL, p.MAILBOXFULL_PAIRS),
    "mailererror": _has(p.MAILERERROR),
    "mesgtoobig": _has(p.MESGTOOBIG),
    "networkerror": _has(p.NETWORKERROR),
    "norelaying": _has(p.NORELAYING),
    "notaccept": _has(p.NOTACCEPT),
    "notcompliantrfc": _has(p.NOTCOMPLIANTRFC, ((" multiple ", " header"),)),
    "policyviolation": _has(p.POLICYVIOLATION, p.POLICYVIOLATION_PAIRS),
    "rejected": _rejected_text,
    "requireptr": _has(p.REQUIREPTR, p.REQUIREPTR_PAIRS),
    "securityerror": _has(p.SECURITYERROR, p.SECURITYERROR_PAIRS),
    "spamdetected": _has(p.SPAMDETECTED, p.SPAMDETECTED_PAIRS),
    "speeding": _has(p.SPEEDING),
    "suppressed": lambda mesg: False,
    "suspend": _has(p.SUSPEND),
    "syntaxerror": lambda mesg: False,
    "systemerror": _has(p.SYSTEMERROR, (("unable to connect ", "daemon"),)),
    "systemfull": _has(p.SYSTEMFULL),
    "toomanyconn": _has(p.TOOMANYCONN),
    "userunknown": _has(p.USERUNKNOWN, p.USERUNKNOWN_PAIRS),
    "vacation": _has(p.VACATION),
    "virusdetected": _has(p.VIRUSDETECTED),
}


def _lower(fo: Fact) -> str:
    return fo.diagnostic.lower()


def _probe_status_or_text(name: str) -> Callable[[Fact], bool]:
    def probe(fo: Fact) -> bool:
        if fo.reason == name or reason_of_status(fo.status) == name:
            return True
        return INCLUDED[name](_lower(fo))

    return probe


def _probe_text(name: str) -> Callable[[Fact], bool]:
    def probe(fo: Fact) -> bool:
        return fo.reason == name or INCLUDED[name](_lower(fo))

    return probe


def _probe_userunknown(fo: Fact) -> bool:
    if fo.reason == "userunknown":
        return True
    temp = reason_of_status(fo.status)
    if temp == "suspend":
        return False
    issued = _lower(fo)
    if temp == "userunknown":
        # 5.1.1 with a text that says something else is not an unknown user
        for other in ("norelaying", "blocked", "mailboxfull", "hasmoved", "rejected", "notaccept"):
            if INCLUDED[other](issued):
                return False
        return True
    return fo.command == "RCPT" and INCLUDED["userunknown"](issued)


def _probe_filtered(fo: Fact) -> bool:
    if fo.reason == "filtered":
        return True
    temp = reason_of_status(fo.status)
    if temp == "suspend":
        return False
    issued = _lower(fo)
    if temp == "filtered":
        return INCLUDED["userunknown"](issued) or INCLUDED["filtered"](issued)
    if fo.command in EXCEPT_DATA:
        return False
    return INCLUDED["filtered"](issued) or INCLUDED["userunknown"](issued)


def _probe_rejected(fo: Fact) -> bool:
    if fo.reason == "rejected":
        return True
    temp = reason_of_status(fo.status)
    if temp == "rejected":
        return True
    temp = temp or "undefined"
    issued = _lower(fo)
    if fo.command == "MAIL":
        return INCLUDED["rejected"](issued)
    if fo.command == "DATA" and temp != "userunknown":
        return INCLUDED["rejected"](issued)
    if not is_explicit(temp) or temp in ("securityerror", "systemerror"):
        return INCLUDED["rejected"](issued)
    return False


def _probe_hostunknown(fo: Fact) -> bool:
    if fo.reason == "hostunknown":
        return True
    issued = _lower(fo)
    if reason_of_status(fo.status) == "hostunknown":
        return not INCLUDED["networkerror"](issued)
    return INCLUDED["hostunknown"](issued)


def _probe_mesgtoobig(fo: Fact) -> bool:
    if fo.reason == "mesgtoobig":
        return True
    temp = reason_of_status(fo.status)
    if temp == "mesgtoobig":
        return True
    if temp == "exceedlimit" or fo.status == "5.2.3":
        return False
    return INCLUDED["mesgtoobig"](_lower(fo))


def _probe_spamdetected(fo: Fact) -> bool:
    if not fo.status:
        return False
    if fo.reason == "spamdetected" or reason_of_status(fo.status) == "spamdetected":
        return True
    if fo.command in EXCEPT_DATA:
        return False
    return INCLUDED["spamdetected"](_lower(fo))


def _probe_contenterror(fo: Fact) -> bool:
    if fo.reason == "contenterror":
        return True
    if _probe_spamdetected(fo):
        return False
    if reason_of_status(fo.status) == "contenterror":
        return True
    return INCLUDED["contenterror"](_lower(fo))


def _probe_suspend(fo: Fact) -> bool:
    if fo.reason == "suspend" or fo.reply_code == "525":
        return True
    return INCLUDED["suspend"](_lower(fo))


def _probe_norelaying(fo: Fact) -> bool:
    if fo.reason == "norelaying":
        return True
    if fo.reason in ("securityerror", "systemerror", "undefined"):
        return False
    if fo.command in ("CONN", "EHLO", "HELO"):
        return False
    return INCLUDED["norelaying"](_lower(fo))


def _probe_virus(fo: Fact) -> bool:
    if fo.reason == "virusdetected":
        return True
    if fo.command in EXCEPT_DATA:
        return False
    return INCLUDED["virusdetected"](_lower(fo))


def _probe_notaccept(fo: Fact) -> bool:
    if fo.reason == "notaccept" or fo.reply_code in ("521", "556"):
        return True
    return INCLUDED["notaccept"](_lower(fo))


def _probe_starttls(fo: Fact) -> bool:
    if fo.reason == "failedstarttls" or fo.command == "STARTTLS":
        return True
    if fo.reply_code in ("523", "524", "538"):
        return True
    return INCLUDED["failedstarttls"](_lower(fo))


def _probe_syntaxerror(fo: Fact) -> bool:
    if fo.reason == "syntaxerror":
        return True
    if not fo.reply_code.isdigit():
        return False
    n = int(fo.reply_code)
    return 400 < n < 408 or 500 < n < 508


PROBES: dict[str, Callable[[Fact], bool]] = {
    "mailboxfull": _probe_status_or_text("mailboxfull"),
    "mesgtoobig": _probe_mesgtoobig,
    "exceedlimit": _probe_status_or_text("exceedlimit"),
    "suspend": _probe_suspend,
    "hasmoved": _probe_text("hasmoved"),
    "norelaying": _probe_norelaying,
    "authfailure": _probe_status_or_text("authfailure"),
    "userunknown": _probe_userunknown,
    "filtered": _probe_filtered,
    "requireptr": _probe_status_or_text("requireptr"),
    "notcompliantrfc": _probe_text("notcompliantrfc"),
    "badreputation": _probe_text("badreputation"),
    "contenterror": _probe_contenterror,
    "rejected": _probe_rejected,
    "hostunknown": _probe_hostunknown,
    "spamdetected": _probe_spamdetected,
    "speeding": _probe_text("speeding"),
    "toomanyconn": _probe_status_or_text("toomanyconn"),
    "blocked": _probe_status_or_text("blocked"),
    "virusdetected": _probe_virus,
    "notaccept": _probe_notaccept,
    "failedstarttls": _probe_starttls,
    "syntaxerror": _probe_syntaxerror,
}

_ORDER_PROBE = (
    "mailboxfull", "mesgtoobig", "exceedlimit", "suspend", "hasmoved", "norelaying", "authfailure",
    "userunknown", "filtered", "requireptr", "notcompliantrfc", "badreputation", "contenterror",
    "rejected", "hostunknown", "spamdetected", "speeding", "toomanyconn", "blocked",
)  # fmt: skip
_ORDER_TEXT = (
    "mailboxfull", "authfailure", "badreputation", "speeding", "spamdetected", "virusdetected",
    "policyviolation", "norelaying", "systemerror", "networkerror", "suspend", "contenterror",
    "systemfull", "notaccept", "expired", "failedstarttls", "securityerror", "suppressed",
    "mailererror",
)  # fmt: skip


def _another(fo: Fact, why: list[str]) -> str:
    if is_explicit(fo.reason):
        return _said(why, fo.reason, "the decoder named it")
    issued = _lower(fo)
    reason = reason_of_status(fo.status)
    if not reason or reason in RETRY or fo.dtype != "SMTP":
        for name in _ORDER_TEXT:
            if INCLUDED[name](issued):
                return _said(why, name, f"the message matches {name}'s phrases")
        if reason:
            return _said(why, reason, f"status {fo.status} means {reason}")
        if len(fo.status) > 3:
            head = fo.status[:3]
            if head in ("5.6", "4.6"):
                return _said(why, "contenterror", f"status class {head}.x (content)")
            if head in ("5.7", "4.7"):
                return _said(why, "securityerror", f"status class {head}.x (security or policy)")
        if fo.dtype.startswith("X-UNIX"):
            return _said(why, "mailererror", "a local mailer (X-Unix) failed")
        if _probe_syntaxerror(fo):
            return _said(why, "syntaxerror", "the reply is a syntax error")
        if fo.action in ("delayed", "expired"):
            return _said(why, "expired", f"the action is {fo.action}")
        if fo.command in ("EHLO", "HELO"):
            return _said(why, "blocked", f"refused at {fo.command}")
    if reason:
        return _said(why, reason, f"status {fo.status} means {reason}")
    return reason


_SPAM_WORD = re.compile(r"\bspam\b")


def _said(why: list[str], reason: str, because: str) -> str:
    why.append(because)
    return reason


def find_reason(fo: Fact, why: list[str] | None = None) -> str:
    """Return the reason for a recipient from its status, reply code and message; ``why``, when
    given, hears the rule that decided (``bounces parse --explain``)."""
    why = [] if why is None else why
    if fo.reason and fo.reason not in RETRY:
        return _said(why, fo.reason, "the decoder named it")
    if fo.status.startswith("2."):
        return _said(why, "delivered", f"status {fo.status} is a success")
    found = ""
    if fo.dtype in ("SMTP", ""):
        for name in _ORDER_PROBE:
            if PROBES[name](fo):
                found = _said(why, name, f"the SMTP reply matches {name}'s rules")
                break
    if found in ("", "undefined"):
        found = _another(fo, why)
        if found == "undefined":
            found = ""
        if not found and fo.action == "delayed":
            found = _said(why, "expired", "the action is delayed")
        if found:
            return found
        issued = _lower(fo)
        if INCLUDED["vacation"](issued):
            found = _said(why, "vacation", "the message matches an auto-reply's phrases")
        elif _SPAM_WORD.search(issued):  # "5.9.8 Spam", "Spam Signature detected"
            found = _said(why, "spamdetected", "the message names spam, and no rule said more")
        if not found and issued:
            found = _said(why, "onhold", "no rule matched the message: held for a person")
        if not found:
            found = _said(why, "undefined", "no status and no message")
    return found


_LDA_AGENTS = (
    ("dovecot", ("your message to <", "> was automatically rejected:")),
    ("mail.local", ("mail.local: ",)),
    ("procmail", ("procmail: ", "/procmail ")),
    ("maildrop", ("maildrop: ",)),
    ("vpopmail", ("vdelivermail: ",)),
    ("vmailmgr", ("vdeliver: ",)),
)
_LDA_MESSAGES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "dovecot": (
        ("mailboxfull", ("not enough disk space", "quota exceeded")),
        ("userunknown", ("mailbox doesn't exist: ",)),
    ),
    "mail.local": (
        ("mailboxfull", ("disc quota exceeded", "mailbox full or quota exceeded")),
        ("systemerror", ("temporary file write error",)),
        (
            "userunknown",
            (
                ": invalid mailbox path",
                ": unknown user:",
                ": user missing home directory",
                ": user unknown",
            ),
        ),
    ),
    "procmail": (
        ("mailboxfull", ("quota exceeded while writing", "user over quota")),
        ("systemerror", ("service unavailable",)),
        ("systemfull", ("no space left to finish writing",)),
    ),
    "maildrop": (
        ("mailboxfull", ("maildir over quota.",)),
        ("userunknown", ("cannot find system user", "invalid user specified.")),
    ),
    "vpopmail": (
        ("filtered", ("user does not exist, but will deliver to ",)),
        ("mailboxfull", ("domain is over quota", "user is over quota")),
        ("suspend", ("account is locked email bounced",)),
        ("userunknown", ("sorry, no mailbox here by that name.",)),
    ),
    "vmailmgr": (
        ("mailboxfull", ("delivery failed due to system quota violation",)),
        (
            "userunknown",
            (
                "invalid or unknown base user or domain",
                "invalid or unknown virtual user",
                "user name does not refer to a virtual user",
            ),
        ),
    ),
}


def local_agent_reason(fo: Fact) -> str:
    """Return a reason from an error of a local delivery agent (procmail, dovecot, ...)."""
    if not fo.diagnostic or (fo.command and fo.command != "DATA"):
        return ""
    issued = _lower(fo)
    for agent, marks in _LDA_AGENTS:
        if contains_any(issued, marks):
            for reason, texts in _LDA_MESSAGES[agent]:
                if contains_any(issued, texts):
                    return reason
            return "mailererror"
    return ""
