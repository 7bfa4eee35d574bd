"""The last resort: a failure report no decoder knows still names its failed recipients.

Tried after every decoder, the DSN, ARF and auto-reply readers found nothing. A report that
looks like a delivery failure (its From, Subject or first lines say so) is read line by line
before the returned original: every address there that is not the report's own (its From, To,
the original's sender, a postmaster or mailer-daemon, a return path of ours) and whose line or
the two after it carry evidence of a failure (a reply code, an enhanced status, words such as
"unknown", "does not exist", "quota") is a failed recipient, with those lines as its diagnostic;
so is an address that a sentence before it leads in to ("could not be delivered to:", "The
following recipients did not receive your message:", "Error-for:"), unless it stands in a quoted
header of the original. The usual rules then classify it from that text (a user said to be
unknown, no command named, was refused at RCPT). A report that mentions an allowlist or reads
as an out-of-office note gives no recipient (challenges are caught before any decoder's rows
count: challenge.py), and one that says delivery will be retried gives delays (expiry.py): in
doubt, nobody is suppressed.
"""

from __future__ import annotations

import re

from . import codes
from .dsn import split_original
from .formats.base import RFC822_PARTS, Records
from .hosts import find_address
from .model import Message, Rising
from .reasons import INCLUDED
from .text import sweep

#: where the returned original (or its headers) starts, in the layouts decoders do not know
_ORIGINAL = (
    *RFC822_PARTS,
    "------ This is a copy of the message",
    "----- Original message -----",
    "--- Below this line is a copy of the message",
    "------- Returned Message --------",
    "----- Unsent message follows -----",
    "Original message follows",
    "Original message header:",
)
_LOOKS_LIKE = re.compile(
    r"(?i)mailer-daemon|postmaster|mail delivery|delivery (status|failure|notification|report)"
    r"|undeliver|returned mail|delivery (has )?failed|failure notice|could not be delivered"
    r"|was not delivered|non-?delivery|permanent(ly)? (error|fatal)|rejected your message"
)
_EVIDENCE = re.compile(
    r"(?i)\b[45]\d\d\b|\b[45]\.\d{1,3}\.\d{1,3}\b|unknown|no such|does(n't| not) exist"
    r"|not exist|invalid|rejected|refused|denied|unavailable|disabled|quota|mailbox (is )?full"
    r"|not found|fail|undeliver|blocked|unrout|no mailbox|not a valid|inactive|expired|deleted"
    r"|suspended|over ?limit|too (big|large)|spam|blacklist|blocklist|not known|not recogni[sz]ed"
    r"|no longer (valid|active)|final (e-?mail )?delivery point|\berror\b"
    r"|n'existe pas|inexistant|unbekannt|nicht zustellbar"
)
#: a sentence that introduces the failed recipients listed after it ("could not be delivered to:",
#: "The following addresses failed:", "Error-for:"): evidence for the addresses on the lines that
#: follow it
_LEADS_IN = re.compile(
    r"(?i)(could|can ?not|cannot|unable to|was not|were not|did not|has not been|couldn't)"
    r" (be )?(deliver|reach|receiv|sen[dt]|transmit)|following (e-?mail )?(address|recipient|user)"
    r"|(address(es)?|recipients?|users?) (failed|rejected|unknown)|(delivered|addressed) to\b"
    r"|intended recipient|error-for|n'a pas pu|nicht zugestellt"
    # webmail notices in Chinese, Japanese and Korean: "could not be sent / delivered"
    r"|无法(发送|送达|投递)|無法(發送|送達|投遞)|(送信|配信)(できません|できなかった)|전송(하지 못|에 실패)"
)
#: a line of the original's headers quoted in the report: its addresses are not recipients unless
#: the text after them says so
_HEADER_LINE = re.compile(r"(?i)^\s*(to|cc|bcc|from|sender|reply-to|date|subject|sent)\s*:")
#: non-empty lines before an address searched for a sentence leading in to it
LEAD_LINES = 3
#: beyond challenges (challenge.py, checked before any decoder's rows count): an unknown layout
#: that mentions an allowlist, an out-of-office note or an automatic reply is not read as a failure
_NOT_A_FAILURE = re.compile(
    r"(?i)approved senders|whitelist|allowlist|confirm (that )?you (are|sent)"
    r"|out of (the )?office|on (vacation|holiday|leave)|auto(matic)?[- ]?repl(y|ied)"
)
#: an address around an "@", matched on a bounded window (a long line stays linear)
_ADDRESS = re.compile(
    r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}@[A-Za-z0-9][A-Za-z0-9.-]{0,252}\.[A-Za-z]{2,63}"
)
#: lines, and characters of a line, looked at: a report's error text is short
MAX_LINES = 2000
MAX_LINE = 1000
_SYSTEM = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "noreply", "no-reply")
#: the report's own addresses are not recipients
_OWN_HEADERS = ("from", "to", "reply-to", "return-path", "sender")
MAX_RECIPIENTS = 20


def inquire(msg: Message) -> Rising | None:
    """The failed recipients of a report no decoder read (None: nothing that looks like one)."""
    former, latter = split_original(msg.payload, _ORIGINAL)
    first = former[:3000]
    if not _LOOKS_LIKE.search(msg.header("from") + "\n" + msg.header("subject") + "\n" + first):
        return None
    if _NOT_A_FAILURE.search(msg.header("subject") + "\n" + first):
        return None
    own = {find_address(msg.header(h)).lower() for h in _OWN_HEADERS}
    for line in latter.split("\n")[:60]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ("from", "sender", "return-path", "reply-to"):
            own.add(find_address(value).lower())
    recs = Records()
    seen: set[str] = set()
    # addresses only a lead-in sentence speaks for, taken after those with evidence of their own
    # (a Sendmail listing names the address, its transcript says why a few lines later)
    led: dict[str, str] = {}
    lines = [line[:MAX_LINE] for line in former.split("\n", MAX_LINES)[:MAX_LINES]]
    for i, line in enumerate(lines):
        if "@" not in line:
            continue
        for found in _ADDRESS.findall(line):
            address = found.strip(".'\"").lower()
            local = address.partition("@")[0]
            if address in own or address in seen or local.startswith(("b+", *_SYSTEM)):
                continue
            context = " ".join(part.strip() for part in lines[i : i + 3])
            if not _EVIDENCE.search(context.replace(found, " ")):
                lead = _lead_in(lines, i, line)
                if lead is not None:
                    led.setdefault(address, lead + " " + context)
                continue
            seen.add(address)
            _record(recs, address, context)
            if len(seen) >= MAX_RECIPIENTS:
                return Rising(records=recs.items, rfc822=latter)
    for address, context in led.items():
        if address not in seen and len(seen) < MAX_RECIPIENTS:
            seen.add(address)
            _record(recs, address, context)
    if not recs.count:
        return None
    return Rising(records=recs.items, rfc822=latter)


def _record(recs: Records, address: str, context: str) -> None:
    """A failed recipient and the text that says why."""
    rec = recs.add(address)
    rec.diagnosis = sweep(context)
    # "RCPT TO:<...>": refused at RCPT. A text that names no command and says the user is unknown
    # speaks of the recipient, which every MTA checks at RCPT (or at local delivery): not a
    # content filter's rejection after DATA, the rules' other reading
    rec.command = codes.find_command(context) or (
        "RCPT" if INCLUDED["userunknown"](context.lower()) else ""
    )


def _lead_in(lines: list[str], i: int, line: str) -> str | None:
    """The sentence leading in to the address on ``lines[i]``: on its own line before the
    address, or on one of the LEAD_LINES non-empty lines before it (None: there is none, or the
    line is a quoted header of the original, whose addresses are not recipients)."""
    if _HEADER_LINE.match(line):
        return None
    before = line[: line.find("@")]
    if _LEADS_IN.search(before):
        return before.strip()
    seen = 0
    for j in range(i - 1, max(i - 20, -1), -1):
        text = lines[j].strip()
        if not text:
            continue
        if _LEADS_IN.search(text):
            return text
        seen += 1
        if seen >= LEAD_LINES or _HEADER_LINE.match(text):
            return None
    return None
