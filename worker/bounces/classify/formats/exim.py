"""Exim bounces (``Mail delivery failed: returning message to sender``) and its clones."""

from __future__ import annotations

from .. import codes
from ..dsn import field, match, split_original
from ..hosts import find_address, find_host, is_email_address, parse_received
from ..mime import boundary
from ..model import FIELD_MEMBER, Message, Rising
from ..text import append_capped, contains_any, select, squeeze, sweep
from .base import Records
from .registry import register

__all__ = ["decode"]

_TITLES = (
    "Delivery Status Notification", "Mail delivery failed", "Mail failure", "Message frozen",
    "Warning: message ", "error(s) in forwarding or filtering",
)  # fmt: skip
_BOUNDARIES = (
    "------ This is a copy of the message, including all the headers. ------",
    "Content-Type: message/rfc822",
    "Included is a copy of the message header:\n-----------------------------------------",
)
_STARTING = (
    "This message was created automatically by mail delivery software.",
    "A message that you sent was rejected by the local scannning code",
    "A message that you sent contained one or more recipient addresses ",
    "A message that you sent could not be delivered to all of its recipients",
    " has been frozen",
    " was frozen on arrival",
    " router encountered the following error(s):",
)
_FROZEN = (" has been frozen", " was frozen on arrival")
_COMMAND_MARKS = ("SMTP error from remote ", "LMTP error after ")
_MESSAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("userunknown", ("user not found",)),
    (
        "hostunknown",
        (
            "all host address lookups failed permanently",
            "all relevant MX records point to non-existent hosts",
            "Unrouteable address",
        ),
    ),
    ("mailboxfull", ("mailbox is full", "error: quota exceed")),
    (
        "notaccept",
        (
            "an MX or SRV record indicated no SMTP service",
            "no host found for existing SMTP connection",
        ),
    ),
    (
        "syntaxerror",
        (
            "angle-brackets nested too deep",
            'expected word or "<"',
            "domain missing in source-routed address",
            "malformed address:",
        ),
    ),
    (
        "systemerror",
        (
            "delivery to file forbidden",
            "delivery to pipe forbidden",
            "local delivery failed",
            "LMTP error after ",
        ),
    ),
    ("contenterror", ('Too many "Received" headers',)),
)
_DELAYED = (
    "retry timeout exceeded",
    "No action is required on your part",
    "retry time not reached for any host after a long failure period",
    "all hosts have been failing for a long time and were last tried",
    "Delay reason: ",
    "has been frozen",
    "was frozen on arrival by ",
)


def _is_exim(msg: Message) -> tuple[bool, bool]:
    msgid = msg.header("message-id")
    score = 0
    if "Mail Delivery System" in msg.header("from"):
        score += 1
    if contains_any(msg.header("subject"), _TITLES):
        score += 1
    if msgid.find("<") == 0 and msgid.find("-") == 8 and msgid.find("@") == 18:
        score += 1  # Exim message ids look like <E1P1YNN-0003AD-Ga@example.org>
    thirdparty = any(msg.headers.get(h) for h in ("x-mx-bounce", "x-mxl-hash", "x-mxl-notehash"))
    thirdparty = thirdparty or "<mxl~" in msgid
    return score >= 2 or thirdparty, thirdparty


@register("Exim", order=10)
def decode(msg: Message) -> Rising | None:
    """Decode an Exim bounce (also McAfee/MXLogic which reuse Exim's wording)."""
    ok, thirdparty = _is_exim(msg)
    if not ok:
        return None
    payload = msg.payload
    if "\n----- This " in payload:
        payload = payload.replace("\n----- This ", "\n------ This ", 1)
    former, latter = split_original(payload, _BOUNDARIES)
    recs = Records()
    another = [""]
    nextcursor = False
    cursor = False
    delim = boundary(msg.header("content-type"), 0)
    for line in former.split("\n"):
        if not cursor:
            for mark in _STARTING:
                if mark in line:
                    cursor = True
                    break
        if not cursor or not line:
            continue
        v = recs.cur
        has_addr = (
            line.startswith("  ")
            and line.find("@") >= 2
            and line.find(".") >= 2
            and "pipe to |" not in line
            and line[2:3] != " "
            and (thirdparty or line[2:3] != "<")
        )
        undisclosed = " an undisclosed address" in line
        if has_addr or undisclosed:
            if undisclosed:
                addr = line[2:]
            else:
                addr = find_address(select(line, "<", ">:"))
                if addr:
                    v.diagnosis = sweep(select(line, ">:", None))
                else:
                    p1 = line.rfind(": ")
                    addr = find_address(line[2 : p1 if p1 > -1 else len(line)])
                if not is_email_address(addr):
                    continue
            if v.recipient and addr != v.recipient:
                v = recs.push()
                another.append("")
            v.recipient = addr
            recs.count += 1
        elif " (generated from " in line or " generated by " in line:
            for word in line.split(" "):
                if word.find("@") > 0:
                    v.alias = find_address(word)
                    break
        elif contains_any(line, _FROZEN):
            another[-1] = line + " "
        elif delim:
            if match(line):
                parsed = field(line)
                if not parsed:
                    continue
                if parsed[3] == "addr":
                    if parsed[0] != "final-recipient" or v.spec:
                        continue
                    v.spec = "SMTP" if parsed[2].find("@") > 0 else "X-UNIX"
                elif parsed[3] == "code":
                    v.spec = parsed[1].upper()
                    v.diagnosis = parsed[2]
                else:
                    member = FIELD_MEMBER.get(parsed[0])
                    if member:
                        v.set(member, parsed[2])
            elif not nextcursor:
                if line.startswith("Content-Type: message/delivery-status"):
                    nextcursor = True
                if line.startswith(" "):
                    another[-1] = append_capped(another[-1], line + " ")
        elif len(recs.items) == recs.count or line.startswith("  "):
            v.diagnosis += " " + line
    if recs.count:
        for rec in recs.items:
            if rec.alias and "@" not in rec.recipient:
                rec.recipient = rec.alias
    else:
        failed = msg.header("x-failed-recipients")
        if failed:
            for addr in failed.split(","):
                recs.add(addr.strip(" "))
    if not recs.count:
        return None
    received = msg.headers.get("received") or [""]
    lhost = parse_received(received[-1]).get("from", "")
    first = recs.items[0]
    for j, rec in enumerate(recs.items):
        alt = another[j] if j < len(another) else ""
        if not rec.diagnosis and delim:
            rec.diagnosis = first.diagnosis
            rec.spec = rec.spec or first.spec
            if another[0]:
                alt = another[0]
        if alt:
            rec.diagnosis = rec.diagnosis or alt
            if rec.diagnosis.startswith("-") or rec.diagnosis.endswith("__"):
                rec.diagnosis = alt
            elif len(rec.diagnosis) < len(alt):
                alt = squeeze(alt, " ")
                if rec.diagnosis.lower() in alt.lower():
                    rec.diagnosis = alt
        rec.diagnosis = sweep(rec.diagnosis)
        if "__" in rec.diagnosis[1:]:
            rec.diagnosis = rec.diagnosis[: rec.diagnosis.index("__", 1)]
        rec.rhost = rec.rhost or find_host(rec.diagnosis)
        rec.lhost = rec.lhost or lhost
        if not rec.command:
            command = ""
            for mark in _COMMAND_MARKS:
                if mark in rec.diagnosis:
                    command = codes.find_command(rec.diagnosis)
                    if command:
                        break
            rec.command = command
            if command in ("EHLO", "HELO"):
                rec.reason = "blocked"
            elif command == "MAIL":
                rec.reason = "onhold"
            else:
                for reason, texts in _MESSAGES:
                    if contains_any(rec.diagnosis, texts):
                        rec.reason = reason
                        break
                if not rec.reason:
                    if contains_any(rec.diagnosis, _DELAYED):
                        rec.reason = "expired"
                    elif "pipe to |" in rec.diagnosis:
                        rec.reason = "mailererror"
        cr = codes.find_reply(rec.diagnosis, rec.status)
        cs = codes.find_status(rec.diagnosis, cr)
        temporary = cr.startswith("4") or rec.reason in ("expired", "mailboxfull")
        cv = codes.pseudo_status(rec.reason, temporary)
        rec.reply_code = rec.reply_code or cr
        rec.status = rec.status or codes.prefer_status(cs, cv, cr)
    if not latter:
        latter = "To: <" + first.recipient + ">\n"
        date = select(payload, "The date of the message is: ", "\n")
        if date:
            latter += "Date: " + date.strip(" ") + "\n"
        subject = select(payload, "The subject of the message is: ", "\n")
        if subject:
            latter += "Subject: " + subject.strip(" ") + "\n"
    return Rising(records=recs.items, rfc822=latter)
