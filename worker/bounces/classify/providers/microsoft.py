"""Microsoft 365 / Exchange Online (``*.protection.outlook.com``...): enhanced status codes
with their texts, and the ``RP-``, ``SC-``, ``DY-``, ``OU-`` labels of its filters.

Data from Sisimai's ``rhost/for-microsoft.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team), after
Microsoft's "Email non-delivery reports and SMTP errors in Exchange Online".
"""

from __future__ import annotations

from ..codes import valid_status
from ..reasons import Fact
from .registry import provider

# (reason, status or status prefix, range low, range high, lower-cased text)
MICROSOFT: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "authfailure",
        "4.7.26",
        "",
        "",
        "must pass either spf or dkim validation, this message is not signed",
    ),
    (
        "authfailure",
        "5.7.23",
        "",
        "",
        "the message was rejected because of sender policy framework violation",
    ),
    ("authfailure", "5.7.509", "", "", "does not pass dmarc verification"),
    ("authfailure", "5.7.515", "", "", "doesn't meet the required authentication level"),
    ("badreputation", "4.7.650", "", "", "has been temporarily rate limited due to ip reputation"),
    ("blocked", "4.4.2", "", "", "connection dropped"),
    ("blocked", "4.7.", "850", "899", "access denied, please try again later"),
    ("blocked", "5.7.25", "", "", "must have a reverse dns record"),
    ("blocked", "5.7.506", "", "", "access denied, bad helo"),
    ("blocked", "5.7.507", "", "", "access denied, rejected by recipient"),
    ("blocked", "5.7.510", "", "", "does not accept email over ipv6"),
    ("blocked", "5.7.511", "", "", "access denied, banned sender"),
    ("blocked", "5.7.513", "", "", "using customer block list"),
    ("blocked", "5.7.", "606", "649", "access denied, banned sending ip "),
    ("blocked", "4.7.", "500", "699", "access denied, please try again later"),
    ("blocked", "5.5.4", "", "", "invalid domain name"),
    ("blocked", "5.7.1", "", "", "part of their network is on our block list (s3150)"),
    ("contenterror", "5.3.0", "", "", "too many related errors"),
    ("contenterror", "5.6.11", "", "", "invalid characters"),
    ("contenterror", "5.4.11", "", "", "agent generated message depth exceeded"),
    ("contenterror", "5.5.6", "", "", "invalid message content"),
    (
        "mesgtoobig",
        "5.2.3",
        "",
        "",
        "resolver.rst.recipsizelimit; message too large for this recipient",
    ),
    ("mesgtoobig", "5.3.4", "", "", "message size exceeds fixed maximum message size"),
    ("mesgtoobig", "5.3.4", "", "", "message too big for system"),
    ("expired", "4.4.1", "", "", "connection timed out"),
    ("expired", "4.4.7", "", "", "message delayed"),
    ("expired", "4.4.7", "", "", "queue expired; message expired"),
    ("expired", "4.4.7", "", "", "message expired"),
    ("expired", "5.4.300", "", "", "message expired"),
    ("expired", "5.4.316", "", "", "message expired"),
    ("failedstarttls", "4.4.8", "", "", " failed mta-sts validation"),
    ("failedstarttls", "5.4.8", "", "", " failed mta-sts validation"),
    ("failedstarttls", "4.4.317", "", "", "starttls is required to send mail"),
    ("failedstarttls", "5.4.317", "", "", "starttls is required to send mail"),
    ("failedstarttls", "4.7.5", "", "", "remote certificate failed mta-sts validation"),
    ("failedstarttls", "5.7.5", "", "", "remote certificate failed mta-sts validation"),
    (
        "failedstarttls",
        "5.7.51",
        "",
        "",
        "restrictdomainstoipaddresses or restrictdomainstocertificate",
    ),
    ("failedstarttls", "4.7.321", "", "", "starttls-not-supported:"),
    ("failedstarttls", "5.7.321", "", "", "starttls-not-supported:"),
    ("failedstarttls", "5.7.322", "", "", "certificate-expired:"),
    ("failedstarttls", "4.7.323", "", "", "tlsa-invalid:"),
    ("failedstarttls", "5.7.323", "", "", "tlsa-invalid:"),
    ("failedstarttls", "4.7.324", "", "", "dnssec-invalid:"),
    ("failedstarttls", "5.7.324", "", "", "dnssec-invalid:"),
    ("failedstarttls", "4.7.325", "", "", "certificate-host-mismatch:"),
    ("failedstarttls", "5.7.325", "", "", "certificate-host-mismatch:"),
    ("mailboxfull", "5.2.2", "", "", "mailbox full"),
    ("networkerror", "5.4.4", "", "", "smtpsend.dns.nonexistentdomain; nonexistent domain"),
    ("networkerror", "5.4.6", "", "", "hop count exceeded - possible mail loop"),
    ("networkerror", "4.4.312", "", "", "dns query failed"),
    ("networkerror", "5.4.312", "", "", "dns query failed"),
    ("networkerror", "4.4.316", "", "", "connection refused"),
    ("networkerror", "5.4.316", "", "", "connection refused"),
    ("networkerror", "5.4.4", "", "", "invalid arguments"),
    ("networkerror", "5.4.6", "", "", "routing loop detected"),
    ("networkerror", "5.4.14", "", "", "routing loop detected"),
    ("norelaying", "5.7.1", "", "", "unable to relay"),
    ("norelaying", "5.7.1", "", "", "client was not authenticated"),
    ("norelaying", "5.4.1", "", "", "relay access denied"),
    ("norelaying", "5.7.64", "", "", "tenantattribution; relay access denied"),
    ("norelaying", "5.4.310", "", "", "does not exist"),
    ("notaccept", "4.3.2", "", "", "system not accepting network messages"),
    ("notaccept", "4.4.4", "", "", "hosted tenant which has no mail-enabled subscriptions"),
    ("notaccept", "5.3.2", "", "", "storedrv.deliver: missing or bad storedriver mdb properties"),
    ("policyviolation", "5.0.350", "", "", "x-dg-ref header is too long"),
    (
        "policyviolation",
        "5.0.350",
        "",
        "",
        "requested action not taken: policy violation detected (as345)",
    ),
    ("policyviolation", "5.7.", "900", "999", "delivery not authorized, message refused"),
    ("rejected", "5.1.7", "", "", "invalid address"),
    ("rejected", "5.1.7", "", "", "unknown sender address"),
    ("rejected", "5.1.0", "", "", "sender denied"),
    ("rejected", "5.1.8", "", "", "access denied, bad outbound sender"),
    ("rejected", "5.7.1", "", "", "delivery not authorized"),
    ("rejected", "5.7.12", "", "", "sender was not authenticated by organization"),
    ("rejected", "5.7.124", "", "", "sender not in allowed-senders list"),
    ("rejected", "5.7.133", "", "", "sender not authenticated for group"),
    ("rejected", "5.7.134", "", "", "sender was not authenticated for mailbox"),
    ("rejected", "5.7.13", "", "", "sender was not authenticated for public folder"),
    ("rejected", "5.7.135", "", "", "sender was not authenticated for public folder"),
    ("rejected", "5.7.136", "", "", "sender was not authenticated"),
    ("rejected", "5.7.", "501", "503", "access denied, spam abuse detected"),
    (
        "rejected",
        "5.7.512",
        "",
        "",
        "access denied, message must be rfc 5322 section 3.6.2 compliant",
    ),
    (
        "rejected",
        "5.7.750",
        "",
        "",
        "service unavailable. client blocked from sending from unregistered domains",
    ),
    ("rejected", "5.7.", "501", "503", "access denied, banned sender"),
    ("securityerror", "5.7.3", "", "", "cannot achieve exchange server authentication"),
    ("securityerror", "5.7.3", "", "", "not authorized"),
    ("securityerror", "5.7.1", "", "", "client was not authenticated"),
    (
        "securityerror",
        "5.7.57",
        "",
        "",
        "client was not authenticated to send anonymous mail during mail from",
    ),
    ("spamdetected", "5.2.1", "", "", "content filter agent quarantined this message"),
    ("toomanyconn", "5.5.3", "", "", "too many recipients"),
    ("speeding", "4.3.2", "", "", "storedrv.deliver; recipient thread limit exceeded"),
    ("toomanyconn", "4.5.3", "", "", "too many recipients"),
    ("toomanyconn", "4.7.652", "", "", "has exceeded the maximum number of connections"),
    ("speeding", "5.1.90", "", "", "reached your daily limit for message recipients"),
    ("speeding", "5.2.2", "", "", "submission quota exceeded"),
    ("speeding", "5.2.121", "", "", "recipient's per hour message receive limit"),
    ("speeding", "5.2.122", "", "", "recipient's per hour message receive limit"),
    ("speeding", "5.2.122", "", "", "the recipient has exceeded their limit for"),
    ("speeding", "5.7.508", "", "", "has exceeded permitted limits within"),
    ("speeding", "5.7.", "700", "749", "tenant has exceeded threshold"),
    ("speeding", "5.7.", "700", "749", "traffic not accepted from this ip"),
    ("suspend", "5.7.504", "", "", "recipient address rejected: access denied"),
    ("suspend", "5.7.505", "", "", "access denied, banned recipient"),
    ("suspend", "5.2.1", "", "", "mailbox cannot be accessed"),
    ("syntaxerror", "5.3.3", "", "", "unrecognized command"),
    ("syntaxerror", "5.5.2", "", "", "send hello first"),
    ("systemerror", "4.3.2", "", "", "service not available"),
    ("systemerror", "4.3.2", "", "", "service not active"),
    ("systemerror", "5.3.5", "", "", "system incorrectly configured"),
    ("systemerror", "5.3.190", "", "", "when journaling archive is disabled"),
    ("systemerror", "5.0.0", "", "", "helo / ehlo requires domain address"),
    ("systemerror", "5.1.4", "", "", "destination mailbox address ambiguous"),
    ("systemerror", "5.2.4", "", "", "mailing list expansion problem"),
    ("systemerror", "5.2.14", "", "", "misconfigured forwarding address"),
    ("systemerror", "4.4.", "22", "28", "message failed to be replicated:"),
    ("systemerror", "4.4.3", "", "", "temporary server error. please try again later attr18"),
    (
        "systemerror",
        "4.7.0",
        "",
        "",
        "temporary server error. please try again later. prx4 nexthop:",
    ),
    ("systemerror", "4.4.318", "", "", "(suspiciousremoteservererror)"),
    ("systemerror", "5.4.318", "", "", "(suspiciousremoteservererror)"),
    ("systemerror", "4.7.500", "", "", "server busy. please try again later from "),
    ("systemerror", "4.7.700", "", "", "pfa agent busy, please try again."),
    ("systemfull", "4.3.1", "", "", "insufficient system resources"),
    ("userunknown", "5.1.1", "", "", "resolver.adr.exrecipnotfound; not found"),
    ("userunknown", "5.1.1", "", "", "user unknown"),
    ("userunknown", "5.1.3", "", "", "storedrv.submit; invalid recipient address"),
    ("userunknown", "5.1.", "4", "5", "recipient address reserved by rfc 2606"),
    ("userunknown", "5.1.6", "", "", "recipient addresses in single label domains not accepted"),
    ("userunknown", "5.1.1", "", "", "bad destination mailbox address"),
    ("userunknown", "5.1.10", "", "", "recipient not found"),
    ("userunknown", "5.4.1", "", "", "recipient address rejected: access denied"),
    ("userunknown", "5.5.0", "", "", "requested action not taken: mailbox unavailable"),
    ("userunknown", "5.1.2", "", "", "invalid x.400 address"),
    (
        "userunknown",
        "5.1.351",
        "",
        "",
        "remote server returned unknown recipient or mailbox unavailable",
    ),
)
MICROSOFT_CODES: dict[str, tuple[str, str]] = {
    "RP-001": ("421", "badreputation"),
    "RP-002": ("421", "badreputation"),
    "RP-003": ("421", "badreputation"),
    "SC-001": ("550", "badreputation"),
    "SC-002": ("550", "policyviolation"),
    "SC-003": ("550", "blocked"),
    "SC-004": ("550", "blocked"),
    "DY-001": ("550", "blocked"),
    "DY-002": ("550", "virusdetected"),
    "OU-001": ("550", "blocked"),
    "OU-002": ("550", "badreputation"),
}


@provider(
    "Microsoft",
    hosts=(".prod.outlook.com", ".protection.outlook.com", ".onmicrosoft.com", ".exchangelabs.com"),
    order=130,
)
def microsoft(fo: Fact) -> str:
    """Return the reason for Microsoft's status and words, else for its filter label, or ''."""
    if not fo.diagnostic or not valid_status(fo.status):
        return ""
    status, issued = fo.status, fo.diagnostic.lower()
    third = int(status.split(".")[2])
    for reason, code, low, high, text in MICROSOFT:
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
    for label, (reply, reason) in MICROSOFT_CODES.items():
        if label in fo.diagnostic and fo.reply_code == reply:
            return reason
    return ""
