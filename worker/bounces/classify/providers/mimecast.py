"""Mimecast (``*.mimecast.com``): its rejection texts, each with its reply code.

Data from Sisimai's ``rhost/for-mimecast.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..codes import valid_reply
from ..reasons import Fact
from .registry import provider

# (reply code, lower-cased text) per reason
MIMECAST: tuple[tuple[str, str, str], ...] = (
    ("authfailure", "550", "spf sender invalid - envelope rejected"),
    ("authfailure", "550", "dkim sender invalid - envelope rejected"),
    ("authfailure", "550", "dmarc sender invalid - envelope rejected"),
    ("badreputation", "451", "internal resources are temporarily unavailable"),
    ("badreputation", "550", "local ct ip reputation - (reject)"),
    ("blocked", "421", "sender address blocked"),
    ("blocked", "451", "recipient temporarily unavailable"),
    ("blocked", "451", "ip temporarily blacklisted"),
    ("failedstarttls", "553", "this route requires encryption (tls)"),
    ("failedstarttls", "553", "this route requires tls version 1.2 or greater"),
    ("failedstarttls", "553", "this route requires high-strength ciphers"),
    ("failedstarttls", "554", "configuration is invalid for this certificate"),
    ("mesgtoobig", "554", "maximum email size exceeded"),
    ("networkerror", "451", "the incorrect hostname used for inbounds"),
    ("networkerror", "550", "the incorrect hostname used for inbounds"),
    ("networkerror", "554", "mail loop detected"),
    ("norelaying", "451", "open relay not allowed"),
    ("norelaying", "451", "open relay is not allowed"),
    ("notaccept", "451", "account inbounds disabled"),
    ("onhold", "451", "account outbounds disabled"),
    ("onhold", "451", "hostname is not authorized"),
    ("onhold", "550", "journal message past expiration"),
    ("policyviolation", "550", "anti-spoofing policy - inbound not allowed"),
    ("policyviolation", "550", "rejected by header-based anti-spoofing policy"),
    ("policyviolation", "554", "host network not allowed"),
    ("policyviolation", "554", "host network, not allowed"),
    ("rejected", "550", "administrative prohibition envelope blocked"),
    ("rejected", "550", "envelope blocked - user entry"),
    ("rejected", "550", "envelope blocked - user domain entry"),
    (
        "rejected",
        "550",
        "rejected by header-based manually blocked senders - block for manual block",
    ),
    ("rejected", "550", "rejected by header-based blocked senders - block policy for header from"),
    ("rejected", "550", "envelope rejected - block policy for envelope from address"),
    ("securityerror", "535", "incorrect authentication data"),
    ("securityerror", "550", "submitter failed to disabled"),
    ("securityerror", "550", "submitter failed to authenticate"),
    ("systemerror", "451", "unable to process connection at this time"),
    ("systemerror", "451", "message ended early"),
    ("systemerror", "451", "unable to process command"),
    ("systemerror", "451", "unable to process an email at this time"),
    ("toomanyconn", "451", "account service is temporarily unavailable"),
    ("toomanyconn", "452", "too many recipients"),
    ("toomanyconn", "550", "exceeding outbound thread limit"),
    ("userunknown", "501", "invalid address"),
    ("userunknown", "503", "user unknown"),
    ("userunknown", "550", "invalid recipient"),
    ("virusdetected", "554", "email rejected due to security policies"),
)


@provider("Mimecast", hosts=(".mimecast.com",), order=140)
def mimecast(fo: Fact) -> str:
    """Return the reason for Mimecast's reply code and words together, or ''."""
    if not fo.diagnostic or not valid_reply(fo.reply_code):
        return ""
    issued = fo.diagnostic.lower()
    # "rejected due to security policies - MCSpamSignature.sa.5.6": the signature that matched
    # names spam, whatever the generic words before it (the table reads those as a virus)
    if "spamsignature" in issued or "spam signature" in issued:
        return "spamdetected"
    for reason, reply, text in MIMECAST:
        if fo.reply_code == reply and text in issued:
            return reason
    return ""
