"""Gmail (``*.l.google.com``) and Google Workspace (``googlemail.com``): their SMTP errors.

One module, as ``formats/google.py`` is for their bounce formats: the two share a source.

Data from Sisimai's ``rhost/for-google.go`` and ``for-gsuite.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team), after https://support.google.com/a/answer/3726730.
"""

from __future__ import annotations

from ..codes import valid_reply, valid_status
from ..reasons import Fact
from ..text import contains_any
from .registry import provider

# (reason, reply code, status code, lower-cased text)
GOOGLE: tuple[tuple[str, str, str, str], ...] = (
    ("authfailure", "451", "4.7.24", "the spf record of the sending domain"),
    ("authfailure", "550", "5.7.24", "the spf record of the sending domain"),
    ("authfailure", "421", "4.7.26", "senders to authenticate with either spf or dkim"),
    ("authfailure", "550", "5.7.26", "senders to authenticate with either spf or dkim"),
    ("authfailure", "550", "5.7.26", "fails to pass spf checks for an spf record with a hard fail"),
    ("authfailure", "550", "5.7.26", "has an spf record with a hard fail policy"),
    ("authfailure", "451", "4.7.26", "is not accepted due to domain's dmarc policy"),
    ("authfailure", "550", "5.7.26", "is not accepted due to domain's dmarc policy"),
    ("authfailure", "550", "5.7.1", "fails to pass authentication checks"),
    ("authfailure", "550", "5.7.26", "fails to pass authentication checks"),
    ("authfailure", "421", "4.7.27", "senders to authenticate with spf"),
    ("authfailure", "421", "4.7.27", "senders to authenticate their email with spf"),
    ("authfailure", "550", "5.7.27", "senders to authenticate with spf"),
    ("authfailure", "421", "4.7.30", "senders to authenticate their email with dkim"),
    ("authfailure", "550", "5.7.30", "senders to authenticate with dkim"),
    ("authfailure", "421", "4.7.32", "aligned with either the authenticated spf or dkim"),
    ("authfailure", "421", "5.7.32", "aligned with either the authenticated spf or dkim"),
    ("authfailure", "421", "4.7.40", "to add a dmarc record to "),
    ("badreputation", "421", "4.7.0", "very low reputation of the sending ip address"),
    ("badreputation", "421", "4.7.0", "very low reputation of the sending domain"),
    ("badreputation", "550", "5.7.1", "due to the very low reputation of the sending ip address"),
    ("badreputation", "550", "5.7.1", "due to the very low reputation of the sending domain"),
    ("blocked", "421", "4.7.0", "ip not in whitelist for rcpt domain"),
    ("blocked", "421", "4.7.0", "try again later, closing connection."),
    ("blocked", "501", "5.5.4", "empty helo/ehlo argument not allowed"),
    ("blocked", "501", "5.5.4", "helo/ehlo argument is invalid"),
    ("blocked", "421", "4.7.0", "an unusual rate of unsolicited mail"),
    ("blocked", "421", "4.7.28", "an unusual rate of mail"),
    ("blocked", "550", "5.7.1", "an unusual rate of unsolicited mail"),
    ("blocked", "550", "5.7.28", "an unusual rate of unsolicited mail"),
    ("exceedlimit", "552", "5.2.3", "exceeded google's message size limits"),
    ("exceedlimit", "552", "5.3.4", "exceeds google's limit of limit attachments."),
    ("exceedlimit", "552", "5.3.4", "your message exceeded google's message header size limits"),
    ("exceedlimit", "552", "5.3.4", "bytes per individual header size"),
    ("exceedlimit", "552", "5.3.4", "exceeds google's header name limit of"),
    ("exceedlimit", "552", "5.3.4", "exceeds google's message header size limit"),
    ("expired", "421", "4.7.0", "connection expired"),
    ("expired", "451", "4.4.2", "timeout - closing connection"),
    ("failedstarttls", "530", "5.7.0", "must issue a starttls command first"),
    ("failedstarttls", "454", "5.5.1", "starttls may not be repeated"),
    ("failedstarttls", "421", "4.7.0", "tls required for rcpt domain"),
    ("failedstarttls", "421", "4.7.29", "senders to use tls/ssl for smtp"),
    ("failedstarttls", "550", "5.7.29", "senders to use tls/ssl for smtp"),
    ("mailboxfull", "452", "4.2.2", "inbox is out of storage space"),
    ("mailboxfull", "552", "5.2.2", "inbox is out of storage space and inactive"),
    ("mailboxfull", "452", "4.2.2", "is over quota"),
    ("mailboxfull", "552", "5.2.2", "is over quota"),
    ("mailboxfull", "550", "5.7.1", "email quota exceeded"),
    ("mesgtoobig", "552", "5.3.4", "exceeded google's message size limits"),
    ("mesgtoobig", "552", "5.3.4", "exceeds google's message size limit of"),
    ("networkerror", "554", "5.4.6", "message exceeded 50 hops"),
    ("networkerror", "554", "5.6.0", "message exceeded 50 hops"),
    ("norelaying", "550", "5.7.0", "mail relay denied"),
    ("norelaying", "550", "5.7.1", "invalid credentials for relay"),
    ("norelaying", "550", "5.7.1", "is not authorized to send email directly to our servers"),
    ("notcompliantrfc", "550", "5.7.1", "missing a valid address in the from: header"),
    ("notcompliantrfc", "550", "5.7.1", "multiple addresses in from: header are not accepted"),
    ("notcompliantrfc", "550", "5.7.1", "is not rfc 5322 compliant"),
    ("notcompliantrfc", "550", "5.7.1", "missing a valid message-id: header"),
    ("notcompliantrfc", "550", "5.7.1", "contains a unicode character in a disallowed header"),
    ("notcompliantrfc", "550", "5.7.1", "encoded-word syntax is not permitted"),
    ("notcompliantrfc", "553", "5.1.7", "is not a valid rfc 5321 address"),
    ("notcompliantrfc", "554", "5.6.0", "mail message is malformed"),
    ("policyviolation", "552", "5.7.0", "illegal attachment on your message"),
    (
        "policyviolation",
        "552",
        "5.7.0",
        "blocked because its content presents a potential security issue",
    ),
    (
        "policyviolation",
        "550",
        "5.7.1",
        "you are sending to (or from) has a policy that prohibited",
    ),
    ("policyviolation", "421", "4.7.28", "sending messages with the same message-id:"),
    ("rejected", "550", "5.7.0", "mail sending denied"),
    ("rejected", "550", "5.7.1", "unauthenticated email is not accepted"),
    ("requireptr", "421", "4.7.0", "does not have a ptr record"),
    ("requireptr", "421", "4.7.23", " have a ptr record, or the ptr record"),
    (
        "requireptr",
        "550",
        "5.7.1",
        "does not meet ipv6 sending guidelines regarding ptr records and authentication",
    ),
    ("requireptr", "550", "5.7.25", "does not have a ptr record"),
    ("requireptr", "550", "5.7.25", "does not match the ip address of the hostname"),
    ("securityerror", "454", "4.7.0", "too many login attempts"),
    ("securityerror", "501", "5.5.2", "cannot decode response"),
    ("securityerror", "503", "5.7.0", "no identity changes permitted"),
    ("securityerror", "530", "5.5.1", "authentication required."),
    ("securityerror", "530", "5.7.0", "authentication required."),
    ("securityerror", "535", "5.7.1", "application-specific password required"),
    ("securityerror", "535", "5.7.9", "application-specific password required"),
    ("securityerror", "535", "5.7.1", "please log in with your web browser"),
    ("securityerror", "534", "5.7.9", "please log in with your web browser"),
    ("securityerror", "534", "5.7.14", "please log in through your web browser"),
    ("securityerror", "535", "5.7.1", "username and password not accepted"),
    ("securityerror", "535", "5.7.8", "username and password not accepted"),
    ("spamdetected", "421", "4.7.0", "due to the nature of the content or the links within"),
    ("spamdetected", "550", "5.7.1", "likely unsolicited mail"),
    ("speeding", "450", "4.2.1", "is receiving mail too quickly"),
    ("speeding", "450", "4.2.1", "peak smtp relay limit exceeded for customer"),
    ("speeding", "450", "4.2.1", "rate that prevents additional messages from being delivered"),
    ("speeding", "550", "5.2.1", "rate that prevents additional messages from being delivered"),
    ("speeding", "550", "5.4.5", "daily sending quota exceeded"),
    ("speeding", "550", "5.4.5", "daily user sending limit exceeded"),
    ("speeding", "550", "5.4.5", "daily smtp relay limit exceeded for"),
    ("speeding", "550", "5.7.1", "daily smtp relay limit exceeded for"),
    ("speeding", "550", "5.7.1", "daily smtp relay sending limit exceeded for"),
    ("speeding", "550", "5.7.1", "this mail has been rate limited"),
    ("suspend", "550", "5.2.1", "account that you tried to reach is disabled"),
    ("suspend", "550", "5.2.1", "account that you tried to reach is inactive"),
    ("syntaxerror", "451", "4.5.0", "smtp protocol violation"),
    ("syntaxerror", "454", "4.5.0", "smtp protocol violation"),
    ("syntaxerror", "525", "5.7.10", "smtp protocol violation"),
    ("syntaxerror", "535", "5.5.4", "optional argument not permitted"),
    ("syntaxerror", "501", "5.7.11", "syntax error"),
    ("syntaxerror", "501", "5.5.2", "syntax error"),
    ("syntaxerror", "555", "5.5.2", "syntax error"),
    ("syntaxerror", "502", "5.5.1", "too many unrecognized commands, goodbye"),
    ("syntaxerror", "502", "5.5.1", "unimplemented command"),
    ("syntaxerror", "502", "5.5.1", "unrecognized command"),
    ("syntaxerror", "503", "5.5.1", "bad sequence of commands"),
    ("syntaxerror", "503", "5.5.1", "ehlo/helo first"),
    ("syntaxerror", "503", "5.5.1", "mail first"),
    ("syntaxerror", "503", "5.5.1", "rcpt first"),
    ("syntaxerror", "503", "5.5.1", "no data after bdat"),
    ("syntaxerror", "504", "5.7.4", "unrecognized authentication type"),
    ("syntaxerror", "504", "5.7.4", "xoauth is no longer supported"),
    ("syntaxerror", "554", "5.7.0", "too many unauthenticated commands"),
    ("systemerror", "421", "4.3.0", "temporary system problem"),
    ("systemerror", "421", "4.7.0", "temporary system problem"),
    ("systemerror", "421", "4.4.5", "server busy"),
    ("systemerror", "451", "4.3.0", "multiple destination domains per transaction is unsupported"),
    ("systemerror", "451", "4.3.0", "mail server has temporarily rejected this message"),
    ("systemerror", "451", "4.3.0", "mail server temporarily rejected message"),
    ("systemerror", "452", "4.5.3", "domain policy size per transaction exceeded"),
    ("systemerror", "454", "4.7.0", "cannot authenticate due to temporary system problem"),
    ("toomanyconn", "452", "4.5.3", "your message has too many recipients"),
    ("toomanyconn", "550", "5.5.3", "too many recipients for this sender"),
    ("userunknown", "550", "5.1.1", "the email account that you tried to reach does not exist"),
    ("userunknown", "553", "5.1.2", "we weren't able to find the recipient domain"),
    ("userunknown", "553", "5.1.3", "is not a valid rfc 5321 address"),
)

GSUITE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hostunknown", (" responded with code NXDOMAIN", "Domain name not found")),
    (
        "networkerror",
        (" had no relevant answers.", "responded with code NXDOMAIN", "Domain name not found"),
    ),
    ("notaccept", ("Null MX",)),
    (
        "userunknown",
        (
            "because the address couldn't be found. Check for typos or unnecessary spaces and try again.",
        ),
    ),
)


@provider("Google", hosts=("aspmx.l.google.com", "gmail-smtp-in.l.google.com"), order=80)
def google(fo: Fact) -> str:
    """Return the reason for Gmail's reply code, status and words together, or ''."""
    if not fo.diagnostic or not valid_reply(fo.reply_code) or not valid_status(fo.status):
        return ""
    status, reply, issued = fo.status[2:], fo.reply_code[1:], fo.diagnostic.lower()
    for reason, code, dsn, text in GOOGLE:
        # Sisimai compares only the tail of both codes (421 and 521 look alike here)
        if text in issued and code.find(reply) >= 1 and dsn.find(status) >= 2:
            return reason
    return ""


@provider("GSuite", hosts=("googlemail.com",), order=90)
def gsuite(fo: Fact) -> str:
    """Return the reason Google Workspace's words give, weighed by the code's class, or ''."""
    if not fo.diagnostic:
        return ""
    sc, rc = fo.status[:1], fo.reply_code[:1]
    for reason, needles in GSUITE:
        if not contains_any(fo.diagnostic, needles):
            continue
        if reason == "networkerror" and "5" in (sc, rc):
            continue
        if reason == "hostunknown" and (sc in ("4", "") or rc in ("4", "")):
            continue
        return reason
    return ""
