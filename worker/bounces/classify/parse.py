"""Entry point of the bounce parser: ``parse_bounce(raw) -> BounceReport``.

The pipeline follows Sisimai (https://libsisimai.org/, go-sisimai ``message``
and ``fact`` packages, BSD 2-Clause License, Copyright (C) 2014 azumakuniyuki
and the sisimai development team):

1. read the headers and flatten/decode the body (:mod:`.mime`);
2. try the MTA-specific decoders the Subject: suggests, then all of them, then
   the RFC 3464 DSN reader, the ARF reader, the auto-reply reader and, last, the
   fallback that reads failed recipients from the text (:mod:`.fallback`);
3. for each recipient, clean the diagnostic text, pick the status and reply
   codes, classify the reason (:mod:`.reasons`, :mod:`.providers`) and apply the
   hard-bounce rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from . import arf, autoreply, challenge, codes, dsn, expiry, fallback
from .formats import DECODERS, order_for
from .hosts import find_address, find_host, is_email_address, is_internet_host, parse_received
from .mime import prepare_body, read_message, unfold
from .model import Bounce, BounceReport, Message, Record, Rising
from .providers import find_rhost_reason
from .reasons import RETRY, Fact, find_reason, is_explicit, local_agent_reason
from .text import sweep

__all__ = ["Bounce", "BounceReport", "parse_bounce"]

_ENVELOPE_HEADERS = (
    "to",
    "delivered-to",
    "x-original-to",
    "envelope-to",
    "x-envelope-to",
    "x-rcpt-to",
)
_RECEIVED_FOR = re.compile(r"\bfor\s+<?([^\s<>;]+@[^\s<>;]+)>?", re.IGNORECASE)
#: recipients of one report that are classified: a return path names one recipient (a DSN for
#: us lists one), and classifying costs up to a diagnostic's length each
MAX_RECORDS = 100
_ORIGINAL_KEEP = ("message-id", "subject", "from", "to", "x-maildispatch-job")
_ORIGINAL_NAMES = {
    "message-id": "Message-ID",
    "subject": "Subject",
    "from": "From",
    "to": "To",
    "x-maildispatch-job": "X-Maildispatch-Job",
}


def _sift(message: Message) -> tuple[Rising, str] | None:
    prepare_body(message)
    for name in order_for(message.header("subject")):
        if name in ("ARF", "RFC3834"):
            continue
        rising = _attempt(DECODERS[name], message)
        if rising is not None and rising.records:
            return rising, name
    for name, decoder in (
        ("RFC3464", dsn.inquire),
        ("ARF", arf.inquire),
        ("RFC3834", autoreply.inquire),
        ("fallback", fallback.inquire),  # nothing knew it: the text's failed recipients
    ):
        rising = _attempt(decoder, message)
        if rising is not None and rising.records:
            return rising, name
    return None


def _attempt(decoder: Callable[[Message], Rising | None], message: Message) -> Rising | None:
    # Reports are untrusted input: a decoder tripping over a malformed one must not
    # stop the others from trying, so its slicing/lookup errors count as "not mine".
    try:
        return decoder(message)
    except (IndexError, KeyError, ValueError, TypeError, AttributeError):
        return None


def _original_headers(rfc822: str) -> dict[str, list[str]]:
    # the header block of the quoted original: up to the first blank line after a field
    lines: list[str] = []
    seen = False
    for line in rfc822.split("\n"):
        line = line.rstrip("\r")
        if not line:
            if seen:
                break
            continue
        seen = seen or (line[0] not in " \t" and line.find(":") > 0)
        lines.append(line)
    headers = unfold("\n".join(lines))
    return headers


def _clean_host(value: str) -> str:
    if not value:
        return ""
    if value.find("@") > 0:
        value = value.split("@", 1)[1]
    for ch in "()[]\r":
        value = value.replace(ch, "")
    if "=" in value:
        value = value.split("=", 1)[1]
    if " " in value:
        words = value.split(" ")
        value = next((w for w in words if not _is_ipv4_like(w)), words[0])
        if value.find(" ") > 0:
            value = words[0]
    return value.rstrip(".")


def _is_ipv4_like(word: str) -> bool:
    parts = word.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def _diagnostic(rec: Record) -> tuple[str, str, str]:
    """Return (diagnostic text, status, reply code) as Sisimai cleans them."""
    text, status, reply = rec.diagnosis, rec.status, rec.reply_code
    if not text:
        return text, status, reply
    text = text.replace("\r", "")
    cs = codes.find_status(text)
    cr = codes.find_reply(text, cs)
    status = codes.prefer_status(status, cs, cr)
    if len(cr) == 3:
        reply = reply or cr
        if cr + "-" in text:
            # Multi-line replies repeat "550-5.7.1"; keep the text once, with one code
            for sep in ("-", " "):
                text = text.replace(cr + sep + cs, "").replace(cr + sep, "")
            if cr in text:
                text = cr + " " + cs + " " + text
    lower = text.lower()
    p1, p2 = lower.find("<html>"), lower.find("</html>")
    if p1 > 0 and p2 > 0:
        text = text[:p1] + " " + text[p2 + 7 :]
    return sweep(text), status, reply


def _received_hosts(message: Message) -> tuple[str, str]:
    """The first and the last Internet host in the Received: headers' ``from`` parts.

    Computed once per report, not once per recipient: a report with many recipients and many
    Received: headers would otherwise take the product of both.
    """
    hosts = [parse_received(v).get("from", "") for v in message.headers.get("received", [])]
    found = [h for h in hosts if is_internet_host(h)]
    return (found[0], found[-1]) if found else ("", "")


def _build(rec: Record, message: Message, received: tuple[str, str]) -> Bounce | None:
    if not is_email_address(rec.recipient):
        return None
    diag, status, reply = _diagnostic(rec)
    reason = rec.reason
    why: list[str] = []
    dtype = rec.spec
    if not dtype and reason not in ("feedback", "vacation"):
        dtype = "SMTP"
    command = rec.command if codes.is_command(rec.command) else ""
    rhost, lhost = rec.rhost, rec.lhost
    if not rhost:
        host = find_host(rec.diagnosis)
        rhost = host if is_internet_host(host) else received[1]
    if lhost == rhost:
        lhost = ""
    if not lhost:
        lhost = received[0]
    rhost, lhost = _clean_host(rhost), _clean_host(lhost)
    destination = rec.recipient[rec.recipient.rfind("@") + 1 :].lower()
    if not reason or reason in RETRY:
        fact = Fact(
            reason=reason,
            status=status,
            diagnostic=diag,
            dtype=dtype,
            command=command,
            reply_code=reply,
            action=rec.action,
            destination=destination,
            rhost=rhost,
            lhost=lhost,
        )
        fallback = reason or "undefined"
        for finder, source in (
            (local_agent_reason, "a local delivery agent's error"),
            (find_rhost_reason, f"the rules of the receiving provider ({rhost or 'unknown'})"),
        ):
            found = finder(fact)
            if is_explicit(found):
                reason, why = found, [source]
                break
        else:
            found = find_reason(fact, why)
            if is_explicit(found):
                reason = found
            else:
                reason = "onhold" if diag else fallback
                if not why:
                    why.append("no rule decided" + (": held for a person" if diag else ""))
    else:
        why.append("the decoder named it")
    hard = False
    if reason in ("delivered", "feedback", "vacation"):
        if reason != "delivered":
            reply = ""
    else:
        text = status + " " + diag
        hard = codes.is_hard_bounce(reason, text if len(text) >= 4 else "")
    if not status:
        text = reply + " " + diag
        text = text if len(text) >= 4 else ""
        temporary = (
            codes.is_temporary(text)
            if (codes.is_permanent(text) or codes.is_temporary(text))
            else False
        )
        status = codes.pseudo_status(reason, temporary)
        why.append(f"no status in the report: {status} stands for the reason")
    klass = status[:1]
    if klass != reply[:1]:
        found = codes.find_reply(diag, klass)
        reply = found if found.startswith(klass) else ""
    action = rec.action
    if action and action not in dsn.ACTIONS:
        action = dsn.action_of(action)
    if reason == "delivered":
        action = "delivered"
    elif reason == "expired" and action != "failed":
        # Sisimai reports every expiry as "delayed"; a DSN that says "failed" (the MTA gave up)
        # keeps it, so a final expiry reads as the failure it is
        action = "delayed"
    elif not action and klass == "5":
        action = "failed"
    # a 4.x.x without an Action is left to expiry.settle: a warning that delivery goes on (Exim's
    # "Delivery attempts will continue"), or the final failure after retries
    if reason in ("feedback", "vacation"):
        status = ""
    return Bounce(
        recipient=rec.recipient.lower() if rec.recipient.isascii() else rec.recipient,
        action=action,
        status=status,
        reply_code=reply,
        reason=reason,
        hard=hard,
        diagnostic=diag,
        why="; ".join(why),
    )


def _envelope(message: Message) -> tuple[str, ...]:
    found: dict[str, None] = {}  # ordered, with constant-time membership
    for name in _ENVELOPE_HEADERS:
        for value in message.headers.get(name, []):
            for piece in value.split(","):
                addr = find_address(piece).lower()
                if addr and addr not in found:
                    found[addr] = None
    for value in message.headers.get("received", []):
        if " for " not in value:
            continue
        hit = _RECEIVED_FOR.search(value)
        if hit:
            cand = hit.group(1).lower()
            if cand not in found and is_email_address(cand):
                found[cand] = None
    return tuple(found)


def _original_case(body: str, name: str, value: str) -> str:
    """Return ``value`` as written in the returned message (the decoders see it lower-cased)."""
    lower = body.lower()
    want = value.lower()
    pos = lower.find("\n" + name + ":")
    while pos > -1:
        start = pos + len(name) + 2
        end = lower.find("\n", start)
        end = len(lower) if end < 0 else end
        if " ".join(lower[start:end].split()) == " ".join(want.split()):
            return " ".join(body[start:end].split())
        pos = lower.find("\n" + name + ":", end)
    return value


def _kind(bounces: list[Bounce], decoder: str) -> str:
    reasons = {b.reason for b in bounces}
    if reasons == {"feedback"}:
        return "feedback"
    if reasons == {"vacation"} or decoder == "RFC3834":
        return "autoreply"
    if any(
        b.action == "failed" or (b.action not in ("delayed", "delivered") and b.reason != "expired")
        for b in bounces
    ):
        return "bounce"
    if any(b.action == "delayed" for b in bounces):
        return "delay"
    return "bounce" if bounces else "unknown"


def parse_bounce(raw: bytes) -> BounceReport:
    """Parse one inbound bounce, delay notice, feedback report or auto-reply."""
    message = read_message(raw)
    if message is None:
        return BounceReport()
    envelope = _envelope(message)
    untidy = message.payload
    sifted = _sift(message)
    if sifted is None:
        return BounceReport(envelope_recipients=envelope)
    rising, decoder = sifted
    if decoder != "RFC3834" and challenge.is_challenge(message):  # asks for a confirmation
        return BounceReport(kind="autoreply", envelope_recipients=envelope, decoder="challenge")
    rfc822 = rising.rfc822
    if "\nFrom:" not in rfc822 and message.header("to"):
        rfc822 = "From: " + message.header("to") + "\n" + rfc822
    first = rising.records[0]
    if "\nTo:" not in rfc822 and first.recipient:
        rfc822 = "To: <" + first.recipient + ">\n" + rfc822
    original = _original_headers(rfc822)
    # a report whose returned original names no sender (removed, or "undisclosed-recipients")
    # still names its failed recipients: they count (Sisimai drops them; nothing is lost here)
    bounces: list[Bounce] = []
    received = _received_hosts(message)
    for rec in rising.records[:MAX_RECORDS]:
        try:
            bounce = _build(rec, message, received)
        except (IndexError, KeyError, ValueError, TypeError, AttributeError):
            continue  # a malformed record is dropped, the others still count
        if bounce is not None:
            bounces.append(bounce)
    bounces = expiry.settle(bounces, raw, decoder)
    feedback = next((r.feedback_type for r in rising.records if r.feedback_type), None)
    headers = {
        _ORIGINAL_NAMES[k]: _original_case(untidy, k, original[k][0])
        for k in _ORIGINAL_KEEP
        if original.get(k) and original[k][0]
    }
    msgid = headers.get("Message-ID")
    return BounceReport(
        bounces=tuple(bounces),
        kind=_kind(bounces, decoder),  # type: ignore[arg-type]
        feedback_type=feedback if any(b.reason == "feedback" for b in bounces) else None,
        envelope_recipients=envelope,
        original_message_id=msgid.strip().strip("<>") if msgid else None,
        original_headers=headers,
        decoder=decoder,
    )
