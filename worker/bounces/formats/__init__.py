"""Decoders for the bounce formats of individual MTAs and mail services.

Each module holds decoders ``(Message) -> Rising | None`` for one family of
MTAs; :data:`DECODERS` names them and :func:`order_for` decides which ones to
try first from the Subject: line, as Sisimai's ``lhost`` package does
(go-sisimai, BSD 2-Clause License, Copyright (C) 2014 azumakuniyuki and the
sisimai development team).
"""

from __future__ import annotations

from collections.abc import Callable

from ..model import Message, Rising
from . import appliances, google, microsoft, postfix, providers, qmail, sendmail, unixmta
from .exim import decode as exim

__all__ = ["DECODERS", "Decoder", "order_for"]

Decoder = Callable[[Message], Rising | None]

DECODERS: dict[str, Decoder] = {
    "Exim": exim,
    "Sendmail": sendmail.sendmail,
    "Exchange2007": microsoft.exchange2007,
    "Exchange2003": microsoft.exchange2003,
    "InterScanMSS": appliances.interscanmss,
    "KDDI": providers.kddi,
    "FML": appliances.fml,
    "Verizon": providers.verizon,
    "AmazonSES": providers.amazonses,
    "ApacheJames": appliances.apachejames,
    "X2": unixmta.x2,
    "Postfix": postfix.postfix,
    "OpenSMTPD": unixmta.opensmtpd,
    "qmail": qmail.qmail,
    "Courier": unixmta.courier,
    "MessagingServer": providers.messagingserver,
    "GoogleWorkspace": google.googleworkspace,
    "Gmail": google.gmail,
    "GMX": providers.gmx,
    "Zoho": providers.zoho,
    "Domino": appliances.domino,
    "Notes": appliances.notes,
    "IMailServer": appliances.imailserver,
    "mFILTER": appliances.mfilter,
    "Activehunter": appliances.activehunter,
    "MailFoundry": appliances.mailfoundry,
    "GoogleGroups": google.googlegroups,
    "MailMarshalSMTP": appliances.mailmarshalsmtp,
    "V5sendmail": sendmail.v5sendmail,
    "EZweb": providers.ezweb,
    "Biglobe": providers.biglobe,
    "EinsUndEins": providers.einsundeins,
    "DragonFly": unixmta.dragonfly,
    "X1": unixmta.x1,
    "X3": unixmta.x3,
    "X6": unixmta.x6,
}

DEFAULT_ORDER: tuple[str, ...] = tuple(DECODERS)

_BY_SUBJECT: dict[str, tuple[str, ...]] = {
    "abuse-report": ("ARF",),
    "auto": ("RFC3834",),
    "auto-reply": ("RFC3834",),
    "automatic-reply": ("RFC3834",),
    "aws-notification": ("AmazonSES",),
    "complaint-about": ("ARF",),
    "delivery-failure": ("Domino", "X2"),
    "delivery-notification": ("MessagingServer",),
    "delivery-status": ("OpenSMTPD", "GoogleWorkspace", "Gmail", "GoogleGroups", "AmazonSES", "X3"),
    "dmarc-ietf-dmarc": ("ARF",),
    "email-feedback": ("ARF",),
    "failed-delivery": ("X2",),
    "failure-delivery": ("X2",),
    "failure-notice": ("qmail", "mFILTER", "Activehunter"),
    "loop-alert": ("FML",),
    "mail-could": ("InterScanMSS",),
    "mail-delivery": ("Exim", "DragonFly", "GMX", "Zoho", "EinsUndEins"),
    "mail-failure": ("Exim",),
    "mail-system": ("EZweb",),
    "message-delivery": ("MailFoundry",),
    "message-frozen": ("Exim",),
    "non-recapitabile": ("Exchange2007",),
    "non-remis": ("Exchange2007",),
    "notice": ("Courier",),
    "postmaster-notify": ("Sendmail",),
    "returned-mail": ("Sendmail", "Biglobe", "V5sendmail", "X1"),
    "there-was": ("X6",),
    "undeliverable": ("Exchange2007", "Exchange2003"),
    "undeliverable-mail": ("MailMarshalSMTP", "IMailServer"),
    "undeliverable-message": ("Notes", "Verizon"),
    "undelivered-mail": ("Postfix", "Zoho"),
    "warning": ("Sendmail", "Exim"),
}


def order_for(subject: str) -> tuple[str, ...]:
    """Return decoder names to try, those suggested by the Subject: first."""
    if not subject:
        return DEFAULT_ORDER
    title = subject
    for ch in "[]_":
        title = title.replace(ch, " ")
    while "  " in title:
        title = title.replace("  ", " ")
    words = title.lower().split(" ", 2)
    colon = words[0].find(":")
    first = title[:colon].lower() if colon > 0 else "-".join(words[:2])
    for ch in ':,*"':
        first = first.replace(ch, "")
    found = _BY_SUBJECT.get(first)
    if not found:
        return DEFAULT_ORDER
    if found[0] in ("ARF", "RFC3834"):
        return found
    return found + DEFAULT_ORDER
