"""The last resort: a failure report no decoder knows still names its failed recipients.

Tried after every decoder, the DSN, ARF and auto-reply readers found nothing. A report that
looks like a delivery failure (its From, Subject or first lines say so) is read line by line
before the returned original: every address there that is not the report's own (its From, To,
the original's sender, a postmaster or mailer-daemon, a return path of ours) and whose line or
the two after it carry evidence of a failure (a reply code, an enhanced status, words such as
"unknown", "does not exist", "quota") is a failed recipient, with those lines as its diagnostic;
the usual rules then classify it from that text. A report that reads as a challenge/response
("verify you are a human", "approved senders") or an out-of-office note gives no recipient: in
doubt between a challenge and a rejection, nobody is suppressed.
"""

from __future__ import annotations

import re

from . import codes
from .dsn import split_original
from .formats.base import RFC822_PARTS, Records
from .hosts import find_address
from .model import Message, Rising
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
    r"|suspended|over ?limit|too (big|large)|spam|blacklist|blocklist"
)
_NOT_A_FAILURE = re.compile(
    r"(?i)verify (that )?you are (a )?(human|real)|approved senders|whitelist|allowlist"
    r"|challenge[ -]response|confirm (that )?you (are|sent)|request to join|guest list"
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
    lines = [line[:MAX_LINE] for line in former.split("\n", MAX_LINES)[:MAX_LINES]]
    for i, line in enumerate(lines):
        if "@" not in line:
            continue
        for found in _ADDRESS.findall(line):
            address = found.strip(".").lower()
            local = address.partition("@")[0]
            if address in own or address in seen or local.startswith(("b+", *_SYSTEM)):
                continue
            context = " ".join(part.strip() for part in lines[i : i + 3])
            if not _EVIDENCE.search(context.replace(found, " ")):
                continue
            seen.add(address)
            rec = recs.add(address)
            rec.diagnosis = sweep(context)
            rec.command = codes.find_command(context)  # "RCPT TO:<...>": refused at RCPT
            if len(seen) >= MAX_RECIPIENTS:
                return Rising(records=recs.items, rfc822=latter)
    if not recs.count:
        return None
    return Rising(records=recs.items, rfc822=latter)
