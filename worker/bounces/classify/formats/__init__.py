"""Decoders for the bounce formats of individual MTAs and mail services.

Each module holds the decoder ``(Message) -> Rising | None`` of one MTA or
provider (``google.py`` the three Google formats, which share their tables),
registered with ``@register(name, order=...)`` (:mod:`.registry`);
:data:`DECODERS` lists them in the default order and :func:`order_for` decides
which ones to try first from the Subject: line, as Sisimai's ``lhost`` package does
(go-sisimai, BSD 2-Clause License, Copyright (C) 2014 azumakuniyuki and the
sisimai development team).
"""

from __future__ import annotations

# the modules whose decoders register themselves: a new format's module is imported here
from . import (  # noqa: F401
    activehunter,
    amazonses,
    aolclassic,
    apachejames,
    biglobe,
    courier,
    domino,
    dragonfly,
    einsundeins,
    exchange2003,
    exchange2007,
    exim,
    ezweb,
    fml,
    gmx,
    google,
    groupwise,
    imailserver,
    interscanmss,
    kddi,
    lsmtp,
    mailfoundry,
    mailmarshalsmtp,
    mdaemon,
    messagingserver,
    mfilter,
    notes,
    opensmtpd,
    postfix,
    qmail,
    registry,
    sendmail,
    v5sendmail,
    verizon,
    x1,
    x2,
    x3,
    x6,
    zoho,
)
from .registry import Decoder

__all__ = ["DECODERS", "Decoder", "order_for"]

#: every decoder, by name, in the default order (each module registers its own)
DECODERS: dict[str, Decoder] = registry.decoders()

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
