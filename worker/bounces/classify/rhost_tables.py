"""Provider error tables used by :mod:`worker.bounces.classify.rhosts`.

Data from Sisimai's ``rhost/for-*.go`` (go-sisimai, BSD 2-Clause License,
Copyright (C) 2014 azumakuniyuki and the sisimai development team), which in
turn cites each provider's published list of SMTP errors.
"""

from __future__ import annotations

FRANCEPTT: dict[str, str] = {
    "101": "blocked", "102": "blocked", "103": "blocked", "104": "toomanyconn", "105": "",
    "107": "", "108": "", "109": "", "201": "", "305": "securityerror", "401": "authfailure",
    "402": "securityerror", "403": "rejected", "405": "rejected", "415": "rejected",
    "416": "userunknown", "417": "mailboxfull", "420": "suspend", "421": "rejected", "423": "",
    "424": "", "426": "suspend", "505": "systemerror", "506": "spamdetected", "510": "blocked",
    "513": "", "514": "mesgtoobig", "517": "authfailure", "630": "policyviolation",
    "999": "blocked",
}  # fmt: skip

NTTDOCOMO: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mailboxfull", ("552 too much mail data",)),
    ("syntaxerror", ("503 bad sequence of commands", "504 command parameter not implemented")),
    ("toomanyconn", ("552 too many recipients",)),
)
OUTLOOK: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "hostunknown",
        ("The mail could not be delivered to the recipient because the domain is not reachable",),
    ),
    ("userunknown", ("Requested action not taken: mailbox unavailable",)),
)
TENCENT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("authfailure", ("spf check failed", "dmarc check failed")),
    ("blocked", ("suspected bounce attacks", "suspected spam ip", "connection denied")),
    ("mesgtoobig", ("message too large",)),
    ("rejected", ("suspected spam", "mail is rejected by recipients")),
    ("spamdetected", ("spam is embedded in the email", "mail content denied")),
    (
        "speeding",
        ("mailbox unavailable or access denined", "frequency of receiving messages is limited"),
    ),
    ("suspend", ("is a deactivated mailbox",)),
    ("syntaxerror", ("bad address syntax",)),
    (
        "toomanyconn",
        (
            "ip frequency limited",
            "domain frequency limited",
            "sender frequency limited",
            "connection frequency limited",
        ),
    ),
    ("userunknown", ("mailbox not found",)),
)
APPLE: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "authfailure",
        ("s dmarc policy", "blocked for failing both spf and dkim autentication checks"),
    ),
    (
        "blocked",
        (
            "rejected due to having a domain present in the spamhaus",
            "rejected due to listing in spamhaus",
            "blocked - see https://support.proofpoint.com/dnsbl-lookup",
            "not accepting connections",
        ),
    ),
    ("hasmoved", ("recipient no longer on server",)),
    ("mailboxfull", ("user is over quota",)),
    ("norelaying", ("relay access denied",)),
    ("notaccept", ("host/domain does not accept mail",)),
    ("policyviolation", ("due to local policy",)),
    ("rejected", ("sender address rejected",)),
    ("speeding", ("due to excessive volume",)),
    ("userunknown", ("inactive email address", "user does not exist", "unknown or illegal alias")),
)
AOL: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hostunknown", ("Host or domain name not found",)),
    ("notaccept", ("type=MX: Malformed or unexpected name server reply",)),
)
CLOUDFLARE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("blocked", ("found on one or more DNSBLs",)),
    ("systemerror", ("Upstream error",)),
)
KDDI: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("filtered", ("550 : user unknown",)),
    ("userunknown", (">: user unknown",)),
)
MESSAGELABS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("authfailure", ("domain authentication fail",)),
    ("badreputation", ("Connection rejected by policy",)),
    (
        "blocked",
        (
            "mail rejected because your IP is in the PBL",
            "your IP address has been ",
            "your IP address (ip-addr) has been blocked",
            "your email address (addr) has been blocked",
        ),
    ),
    ("contenterror", ("Stray linefeeds in message",)),
    ("failedstarttls", ("TLS/SSLv3 Connection required",)),
    ("norelaying", (" as a relay, ",)),
    (
        "notcompliantrfc",
        ("550 Requested action aborted [4]", "has detected that this message is not RFC 5322"),
    ),
    (
        "rejected",
        (
            "sender envelope domain not allowed for sender IP address",
            "your domain has been blocked",
            "your email address has been blocked",
            "your envelope sender is in my badmailfrom list",
            "your email address has been blacklisted",
            "your domain has been blacklisted",
        ),
    ),
    ("securityerror", ("Please turn on SMTP Authentication in your mail client",)),
    ("spamdetected", ("Message Filtered", "filtered by Outbound scanning")),
    ("toomanyconn", ("Too many recipients received this hour", "too many messages")),
    (
        "userunknown",
        (
            "No such user",
            "Invalid recipient",
            "mailbox is not allowed",
            "Recipient mailbox is not allowed",
            # Older Symantec.cloud bounces say only "542 <address> Rejected"
            "542 ",
            " Rejected",
        ),
    ),
)
YAHOOINC: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("authfailure", ("yahoo requires all senders to authenticate with either spf or dkim",)),
    (
        "blocked",
        (
            " because the ip is in spamhaus's list;",
            "not accepted from ip addresses on spamhaus xbl",
        ),
    ),
    ("norelaying", ("relaying denied for ",)),
    ("notcompliantrfc", ("headers are not rfc compliant",)),
    ("policyviolation", ("not accepted for policy reasons",)),
    (
        "rejected",
        (
            "temporarily deferred due to unexpected volume or user complaints",
            "due to unresolvable rfc.5321 domain",
            " will be permanently deferred",
        ),
    ),
    ("speeding", ("user is receiving mail too quickly",)),
    ("suspend", (" is no longer valid.", "this mailbox is disabled")),
    ("syntaxerror", ("syntax error in parameters or arguments",)),
    ("toomanyconn", ("max message per connection reached",)),
    ("userunknown", ("dd this user doesn't have a ", "mailbox not found")),
)
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
SPECTRUM: tuple[tuple[str, str, str], ...] = (
    ("1000", "", "blocked"), ("1010", "", "rejected"), ("1020", "1080", "rejected"),
    ("1090", "", "systemerror"), ("1100", "1150", "requireptr"), ("1160", "1190", "policyviolation"),
    ("1200", "1210", "blocked"), ("1220", "1250", "blokced"), ("1260", "", "networkerror"),
    ("1300", "1340", "toomanyconn"), ("1350", "1490", "speeding"), ("1500", "", "rejected"),
    ("1520", "", "rejected"), ("1530", "", "mesgtoobig"), ("1540", "", "speeding"),
    ("1550", "", "speeding"), ("1560", "", "policyviolation"), ("1580", "", "speeding"),
)  # fmt: skip
COX_CODES: dict[str, str] = {
    "CXBL": "blocked", "CXDNS": "requireptr", "CXSNDR": "authfailure", "CXSMTP": "rejected",
    "CXCNCT": "toomanyconn", "CXMXRT": "toomanyconn", "CDRBL": "blocked",
    "CXTHRT": "securityerror", "CXMJ": "securityerror",
    **{f"IPBL{c}": "blocked" for c in (
        "0001", "0010", "0100", "0011", "0101", "0110", "0111", "1000", "1001", "1010",
        "1011", "1100", "1101", "1110", "1111", "00001",
    )},
    "URLBL011": "spamdetected", "URLBL101": "spamdetected", "URLBL110": "spamdetected",
    "URLBL1001": "spamdetected",
}  # fmt: skip
COX: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("blocked", ("cox too many bad commands from", "too many invalid recipients")),
    ("requireptr", ("dns check failure - try again later", "rejected - no rdns")),
    ("policyviolation", ("esmtp no data before greeting", "attachment extension is forbidden")),
    ("rejected", ("sender rejected",)),
    ("systemerror", ("esmtp server temporarily not available",)),
    (
        "toomanyconn",
        (
            "too many sessions from",
            "requested action aborted: try again later",
            "message threshold exceeded",
        ),
    ),
    ("userunknown", ("recipient rejected",)),
)
FACEBOOK: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("authfailure", ("POL-P7",)),
    ("blocked", ("POL-P1", "POL-P2", "POL-P3", "POL-P4", "POL-T1", "POL-T2", "POL-T3")),
    ("contenterror", ("MSG-P2",)),
    ("filtered", ("RCP-P2", "RCP-P3")),
    ("mesgtoobig", ("MSG-P1", "INT-P2")),
    ("notcompliantrfc", ("MSG-P3",)),
    ("rejected", ("DNS-P1", "DNS-P2", "DNS-T1")),
    ("requireptr", ("DNS-P3", "DNS-T2")),
    ("spamdetected", ("POL-P6",)),
    ("suspend", ("RCP-T4",)),
    ("systemerror", ("RCP-T1",)),
    ("toomanyconn", ("CON-T1", "CON-T2", "CON-T3", "CON-T4", "MSG-T1")),
    ("userunknown", ("RCP-P1", "INT-P1", "INT-P3", "INT-P4")),
    ("virusdetected", ("POL-P5",)),
)
GODADDY_CODES: dict[str, str] = {
    "IB401": "securityerror", "IB501": "notcompliantrfc", "IB502": "notcompliantrfc",
    "IB506": "rejected", "IB508": "authfailure", "IB108": "requireptr", "IB212": "spamdetected",
    "IB705": "virusdetected", "IB605": "toomanyconn", "IB007": "toomanyconn", "IB101": "speeding",
    "IB110": "blocked", "IB111": "blocked", "IB112": "blocked", "IB113": "blocked",
    "IB504": "speeding", "IB510": "speeding", "IB607": "speeding", "IB103": "badreputation",
    "IB104": "blocked", "IB105": "blocked", "IB106": "blocked",
}  # fmt: skip
GODADDY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("blocked", ("rbl reject", "www.spamhaus.org/query/bl?ip=")),
    ("expired", ("has been in the queue too long", "delivery timeout")),
    ("mailboxfull", ("account storage limit",)),
    ("spamdetected", ("message rejected for spam or virus content",)),
    ("suspend", ("account disabled",)),
    ("systemerror", ("message is looping",)),
    ("userunknown", ("recipient not found", "account does not exist")),
)
IUA: dict[str, str] = {
    "1": "norelaying", "2": "userunknown", "3": "suspend", "4": "mailboxfull", "5": "toomanyconn",
    "6": "norelaying", "7": "blocked", "8": "rejected", "9": "blocked", "10": "filtered",
}  # fmt: skip
