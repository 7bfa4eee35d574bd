"""RFC 3464 delivery status notifications (message/delivery-status).

Ported from Sisimai's ``rfc1894``, ``rfc3464`` and ``rfc5322.Part`` (go-sisimai,
BSD 2-Clause License, Copyright (C) 2014 azumakuniyuki and the sisimai
development team).  This is also the fallback decoder for MTAs without a
dedicated module: any body with DSN fields is read here.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import codes
from .hosts import find_address, is_email_address
from .mime import boundary
from .model import FIELD_MEMBER, Message, Record, Rising
from .text import append_capped, select, startswith_any, sweep

__all__ = ["field", "inquire", "match", "split_original"]

_PER_MESSAGE = {
    "arrival-date": ":",
    "received-from-mta": ";",
    "reporting-mta": ";",
    "x-original-message-id": "@",
}
_PER_RECIPIENT = {
    "action": "e",
    "diagnostic-code": ";",
    "final-recipient": ";",
    "last-attempt-date": ":",
    "original-recipient": ";",
    "remote-mta": ";",
    "status": ".",
    "x-actual-recipient": ";",
}
_GROUP = {
    "original-recipient": "addr",
    "final-recipient": "addr",
    "x-actual-recipient": "addr",
    "diagnostic-code": "code",
    "arrival-date": "date",
    "last-attempt-date": "date",
    "received-from-mta": "host",
    "remote-mta": "host",
    "reporting-mta": "host",
    "action": "list",
    "status": "stat",
}
_ACTIONS = frozenset(("failed", "delayed", "delivered", "relayed", "expanded"))
_ACTION_FIX = {"deliverable": "delivered", "expired": "delayed", "failure": "failed"}
ACTIONS = _ACTIONS


def match(line: str) -> int:
    """Return 1 for a per-message DSN field, 2 for a per-recipient one, 0 otherwise."""
    colon = line.find(":")
    if colon < 1:
        return 0
    label = line[:colon].lower()
    mark = _PER_MESSAGE.get(label)
    if mark is not None:
        return 1 if mark in line else 0
    mark = _PER_RECIPIENT.get(label)
    if mark is not None and mark in line:
        return 2
    return 0


def field(line: str) -> list[str]:
    """Parse a DSN field: [name, sub-type, value, group, comment] or []."""
    if len(line) < 7:
        return []
    name, _, rest = line.partition(":")
    label = name.lower()
    group = _GROUP.get(label)
    if group is None:
        return []
    rest = rest.strip()
    table = [label, "", "", group, ""]
    if group in ("addr", "code", "host"):
        if ";" in rest:
            sub, _, val = rest.partition(";")
            table[1] = sub.strip().upper()
            table[2] = val.strip()
        else:
            table[2] = rest
            table[1] = {"addr": "RFC822", "code": "SMTP", "host": "DNS"}[group]
        if group == "host":
            table[2] = table[2].lower()
        if not table[2].replace(" ", ""):
            table[2] = ""
    elif group == "list":
        v = rest.lower()
        table[2] = v if v in _ACTIONS else _ACTION_FIX.get(v, "")
    else:
        table[2] = rest if group == "date" else rest.lower()
    v = table[2]
    p1 = v.find(" (")
    if p1 > -1 and ")" in v[p1 + 2 :]:
        table[4] = select(v, " (", ")")
        table[2] = v[:p1]
    return table


def action_of(text: str) -> str:
    """Return a valid RFC 3464 action for an arbitrary value ('' if none fits)."""
    parsed = field("Action: " + text)
    return parsed[2] if parsed else ""


def split_original(payload: str, cutby: Sequence[str], keeps: bool = False) -> tuple[str, str]:
    """Split a body into (error text, headers of the returned original message)."""
    if not payload or not cutby:
        return ("", "")
    pos = -1
    for mark in cutby:
        pos = payload.find(mark)
        if pos > 0:
            break
    if pos <= 0:
        return (payload, "")
    former = payload[:pos]
    latter = ""
    for chunk in payload[pos:].split("\n\n"):
        if "Received: " in chunk or "From: " in chunk:
            latter = chunk
            break
    if not latter:
        latter = payload[pos:]
    latter = latter.lstrip(" \n\r")
    if keeps and "\n\n" in latter:
        latter = latter.split("\n\n", 1)[0] + "\n"
    if latter and not latter.endswith("\n"):
        latter += "\n"
    return (former, latter)


def apply_field(rec: Record, parsed: list[str]) -> None:
    """Store a parsed non-address, non-code DSN field into a record."""
    member = FIELD_MEMBER.get(parsed[0])
    if member:
        rec.set(member, parsed[2])


_BOUNDARIES = (
    "Content-Type: message/rfc822",
    "Content-Type: text/rfc822-headers",
    "Content-Type: message/partial",
    "Content-Disposition: inline",
)
_STARTING = "Content-Type: message/delivery-status"
_DONT_APPEND = (
    "Content-", "This is a MIME", "This is a multi", "This is an auto", "This multi-part",
    "###", "***", "--",
)  # fmt: skip


def _x_field(line: str) -> list[str]:
    # PowerMTA adds its own fields beside the standard ones
    if not line.startswith("X-PowerMTA-") or ": " not in line:
        return []
    name, _, value = line.partition(":")
    label = name.lower()
    value = value.strip()
    if label == "x-powermta-bouncecategory":
        reasons = {
            "bad-domain": "hostunknown",
            "bad-mailbox": "userunknown",
            "inactive-mailbox": "disabled",
            "message-expired": "expired",
            "no-answer-from-host": "networkerror",
            "policy-related": "policyviolation",
            "quota-issues": "mailboxfull",
            "routing-errors": "systemerror",
            "spam-related": "spamdetected",
        }
        return [label, "", value, "text", reasons.get(value, "")]
    if label == "x-powermta-virtualmta":
        return ["reporting-mta", "", value, "host", ""]
    return []


def inquire(message: Message) -> Rising | None:
    """Decode a body with RFC 3464 fields (the generic fallback decoder)."""
    payload = message.payload
    if not any(b in payload for b in _BOUNDARIES) and "\n\nReturn-Path:" in payload:
        payload = payload.replace("\n\nReturn-Path:", "\n\n" + _BOUNDARIES[0] + "\nReturn-Path:", 1)
        message.payload = payload
    former, latter = split_original(payload, _BOUNDARIES)
    if "@" not in former:
        # The bounce itself sits inside a message/rfc822 part of the report
        for mark in _BOUNDARIES:
            p0 = payload.find(mark + "\n")
            if p0 < 0:
                continue
            rest = payload[p0 + len(mark) + 2 :]
            p2 = rest.find("\n\n")
            former, latter = split_original(rest[p2 + 2 :], (mark,))
            break
    if _STARTING not in former and "\n\nReporting-MTA:" in former:
        former = former.replace("\n\nReporting-MTA:", "\n\n" + _STARTING + "\nReporting-MTA:", 1)
    for name in ("Final-Recipient", "Original-Recipient"):
        bad = "\n" + name + ": <"
        if bad not in former:
            continue
        # Fix "Final-Recipient: <a@b>" into "Final-Recipient: rfc822; a@b"
        former = former.replace(bad, "\n" + name + ": rfc822; ", 1)
        p0 = former.find("\n" + name + ": ")
        p1 = former.find(">\n", p0 + 1)
        if p1 > -1:
            former = former[:p1] + former[p1 + 1 :]

    records = [Record()]
    buffers = [""]
    rec = records[0]
    permessage: dict[str, str] = {}
    keys: list[str] = []
    leadin: list[str] = []
    isboundary = [boundary(message.header("content-type"), 0)]
    nrecipients = 0
    cursor = False
    skipping = False
    previous = ""
    for line in former.split("\n"):
        line = line.rstrip("\r")
        before, previous = previous, line
        if not cursor:
            if line.startswith(_STARTING):
                cursor = True
            if not line or skipping:
                continue
            if startswith_any(line, [b for b in isboundary if b]):
                skipping = False
                continue
            if line.startswith("Content-Type:"):
                if "multipart/" in line:
                    isboundary.append(boundary(line, 0))
                elif "text/plain" in line:
                    skipping = False
                else:
                    skipping = True
                continue
            if startswith_any(line, _DONT_APPEND):
                continue
            if "--- The follow" in line or "--- Transcript" in line:
                continue
            leadin.append(line)
            continue
        if not line:
            continue
        kind = match(line)
        if kind:
            parsed = field(line)
            if not parsed:
                continue
            rec = records[-1]
            if parsed[3] == "addr":
                if parsed[0] == "final-recipient":
                    addr = find_address(parsed[2]) or ""
                    if not is_email_address(addr):
                        continue
                    if addr == records[-1].recipient:
                        continue
                    if rec.recipient:
                        rec = Record()
                        records.append(rec)
                        buffers.append("")
                    rec.recipient = addr
                    nrecipients += 1
                else:
                    rec.alias = parsed[2]
            elif parsed[3] == "code":
                rec.spec = parsed[1]
                buffers[-1] = append_capped(buffers[-1], parsed[2] + " ")
            else:
                if parsed[4]:
                    buffers[-1] = append_capped(buffers[-1], " " + parsed[4] + " ")
                apply_field(rec, parsed)
                if kind != 1:
                    continue
                member = FIELD_MEMBER.get(parsed[0], parsed[0])
                permessage[member] = parsed[2]
                if member not in keys:
                    keys.append(member)
        elif line.startswith("X-") and ": " in line:
            xf = _x_field(line)
            if not xf:
                continue
            member = FIELD_MEMBER.get(xf[0], "")
            if not member:
                rec.reason = xf[4]
            elif not rec.get(member):
                rec.set(member, xf[2])
        elif not before.startswith("Diagnostic-Code:"):
            if line.startswith(("Content-", "--")):
                continue
            leadin.append(line)
        elif line.startswith(" "):
            buffers[-1] = append_capped(buffers[-1], " " + sweep(line))
    # "Final-Recipient: LOCAL; user" or "system; <>": the address is the Original-Recipient
    alias = find_address(records[0].alias) or records[0].alias
    if nrecipients == 0 and is_email_address(alias):
        records[0].recipient = alias
        nrecipients = 1
    if nrecipients == 0:
        return None

    beforemesg = sweep(" ".join(leadin)) if leadin else ""
    alt_command = codes.find_command(beforemesg) if beforemesg else ""
    alt_reply = codes.find_reply(beforemesg, records[0].status) if beforemesg else ""
    alt_status = codes.find_status(beforemesg, alt_reply) if beforemesg else ""
    issued = beforemesg.lower()
    last = records[-1]
    for j, r in enumerate(records):
        for key in keys:
            # Sisimai checks the last record here; keep that so defaults spread the same way
            if last.get(key) or not permessage.get(key):
                continue
            r.set(key, permessage[key])
        r.diagnosis = sweep(buffers[j])
        if nrecipients == 1:
            if r.diagnosis.lower() in issued:
                r.diagnosis = beforemesg
            else:
                r.diagnosis = sweep(beforemesg + " " + r.diagnosis)
        r.command = codes.find_command(r.diagnosis) or alt_command
        r.reply_code = codes.find_reply(r.diagnosis, r.status) or alt_reply
        if not r.status:
            r.status = codes.find_status(r.diagnosis, r.reply_code) or alt_status
    return Rising(records=records, rfc822=latter)
