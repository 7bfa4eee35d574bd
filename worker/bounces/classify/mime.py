"""Read a bounce message: headers, and a flattened, decoded, tidied body.

Instead of building a ``email.message`` tree (slow, and fussy about the broken
MIME that bounces often carry) the body is flattened the way Sisimai does it
(``message``/``rfc2045`` packages of go-sisimai, BSD 2-Clause License, Copyright
(C) 2014 azumakuniyuki and the sisimai development team): every text/* and
message/* part is decoded and concatenated, and the parts the decoders use as
landmarks keep a ``Content-Type:`` line in front of them.
"""

from __future__ import annotations

import base64
import binascii
import quopri
from collections.abc import Callable
from email.errors import HeaderParseError
from email.header import decode_header, make_header

from .model import Message
from .text import squeeze

__all__ = ["boundary", "make_flat", "parameter", "read_message", "tidy", "unfold"]

# Longest body we look at: the explanation and the DSN come first, and a returned
# original can be megabytes long; bounding the scan keeps the parser fast.
MAX_BODY = 256 * 1024

_RFC1894_FIELDS = (
    "Action", "Arrival-Date", "Diagnostic-Code", "Final-Recipient", "Last-Attempt-Date",
    "Original-Recipient", "Received-From-MTA", "Remote-MTA", "Reporting-MTA", "Status",
    "X-Actual-Recipient", "X-Original-Message-ID",
)  # fmt: skip
_RFC5322_FIELDS = (
    "Resent-Date", "From", "Sender", "Reply-To", "To", "Message-ID", "Subject", "Return-Path",
    "Received", "Date", "X-Mailer", "Content-Type", "Content-Transfer-Encoding",
    "Content-Description", "Content-Disposition",
)  # fmt: skip
_RFC5965_FIELDS = (
    "Feedback-Type", "User-Agent", "Version", "Original-Envelope-Id", "Original-Mail-From",
    "Arrival-Date", "Source-IP", "Incidents", "Authentication-Results", "Original-Rcpt-To",
    "Reported-Domain", "Reported-URI", "Received-Date",
)  # fmt: skip
_FIELD_TABLE = {f.lower(): f for f in _RFC1894_FIELDS + _RFC5322_FIELDS + _RFC5965_FIELDS}
_SUBTYPED = frozenset(_RFC1894_FIELDS) | {"Content-Type"}
_CT_REWRITE = (
    ("message/xdelivery-status", "message/delivery-status"),
    ("message/disposition-notification", "message/delivery-status"),
)


def to_lf(text: str) -> str:
    """Normalise CRLF and bare CR line endings to LF."""
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode_words(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, HeaderParseError):
        return value


def read_message(raw: bytes) -> Message | None:
    """Split raw bytes into lower-cased headers and the body (None if no header at all)."""
    text = to_lf(raw.decode("utf-8", errors="replace"))
    if text.startswith("From "):
        # mbox "From " separator line written by the local delivery agent
        nl = text.find("\n")
        text = text[nl + 1 :] if nl > -1 else ""
    end = text.find("\n\n")
    if end < 0:
        head, body = text, ""
    else:
        head, body = text[:end], text[end + 2 :]
    if len(body) > MAX_BODY:
        body = body[:MAX_BODY]
    headers = unfold(head, _skip_header)
    if not headers:
        return None
    if "received" in headers:
        headers["received"] = [
            squeeze(v, " ")
            for v in headers["received"]
            if " invoked by uid" not in v and " invoked from network" not in v
        ]
    subject = headers.get("subject", [""])[0]
    if "=?" in subject and "?=" in subject:
        headers["subject"][0] = _decode_words(subject)
    if subject.lower().startswith(("fwd:", "fw:")):
        # A forwarded bounce: unquote the quoted lines so the decoders see the original
        body = body.replace("\n> ", "\n").replace("\n>\n", "\n\n")
    return Message(headers=headers, payload=body)


def _skip_header(name: str) -> bool:
    return " " in name or "authentication-" in name or name.startswith(("arc-", "dkim-"))


def unfold(head: str, skip: Callable[[str], bool] | None = None) -> dict[str, list[str]]:
    """Lower-cased header names to their unfolded values (RFC 5322 2.2.3), in linear time.

    The pieces of a folded value are gathered in a list and joined once: appending each
    continuation line to the value would copy it again at every line, so that a report made of
    folded lines took time quadratic in its size. ``skip`` drops the headers it names.
    """
    pieces: dict[str, list[list[str]]] = {}
    current: list[str] | None = None
    for line in head.split("\n"):
        if not line:
            continue
        if line[0] in " \t":
            if current is not None:
                cont = line.strip()
                if cont:
                    current.append(cont)
            continue
        colon = line.find(":")
        if colon < 1:
            current = None
            continue
        key = line[:colon].strip().lower()
        if skip is not None and skip(key):
            current = None
            continue
        value = line[colon + 1 :].strip()
        current = [value] if value else []
        pieces.setdefault(key, []).append(current)
    return {k: [" ".join(p) for p in values] for k, values in pieces.items()}


def parameter(value: str, name: str) -> str:
    """Return a parameter of a Content-Type value ('' = the media type itself)."""
    if not value:
        return ""
    start = 0
    if name:
        key = name.lower() + "="
        idx = value.lower().find(key)
        if idx < 0:
            return ""
        start = idx + len(key)
    found = value[start:].split(";", 1)[0]
    if name != "boundary":
        found = found.lower()
    return found.replace("'", "").replace('"', "").strip()


def boundary(value: str, start: int = 0) -> str:
    """Return the boundary of a Content-Type: -1 bare, 0 ``--b``, 1 ``--b--``."""
    text = parameter(value, "boundary")
    if not text:
        return ""
    if start > -1:
        text = "--" + text
    if start > 0:
        text += "--"
    return text


def tidy(payload: str) -> str:
    """Normalise DSN/RFC 5322/RFC 5965 field lines: canonical names, lower-cased values."""
    out: list[str] = []
    append = out.append
    for line in payload.split("\n"):
        colon = line.find(":")
        if colon < 1:
            append(line)
            continue
        low = line[:colon].lower()
        fn = _FIELD_TABLE.get(low)
        if fn is None or " " in low:
            append(line)
            continue
        value = line[colon + 1 :]
        if fn in _SUBTYPED and ";" in value:
            pieces = []
            for piece in value.split(";"):
                piece = piece.strip(" ")
                if " " not in piece:
                    eq = piece.find("=")
                    pname = piece[:eq].lower() if eq > 0 else ""
                    if pname:
                        piece = pname + piece[eq:]
                    if pname != "boundary":
                        piece = piece.lower()
                pieces.append(piece)
            value = "; ".join(pieces)
        elif "-Date" not in fn and "-Message-ID" not in fn:
            value = value.lower()
        if fn == "Content-Type":
            for old, new in _CT_REWRITE:
                value = value.replace(old, new, 1)
        append(fn + ": " + " ".join(w for w in value.split(" ") if w))
    text = "\n".join(out)
    if not text.endswith("\n\n"):
        text += "\n\n"
    return text


def decode_base64(text: str) -> str:
    """Decode a base64 body leniently (bad padding and stray characters are tolerated)."""
    data = "".join(text.split())
    data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data
    data += "=" * (-len(data) % 4)
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return text
    return raw.decode("utf-8", errors="replace")


def decode_qp(text: str) -> str:
    """Decode a quoted-printable body."""
    raw = quopri.decodestring(text.encode("utf-8", errors="replace"))
    return raw.decode("utf-8", errors="replace")


def to_plain(html: str) -> str:
    """Strip tags from an HTML body (enough to read an error text out of it)."""
    lower = html.lower()
    if "<body" not in lower:
        return html
    body = lower.find("<body")
    gt = lower.find(">", body)
    text = html[gt + 1 :] if gt > -1 else html
    low = text.lower()
    s1, s2 = low.find("<style"), low.find("</style")
    if -1 < s1 < s2:
        text = text[:s1] + text[s2 + 8 :]
    parts: list[str] = []
    pos = 0
    while True:
        lt = text.find("<", pos)
        if lt < 0:
            parts.append(text[pos:])
            break
        parts.append(text[pos:lt])
        gt = text.find(">", lt + 1)
        if gt < 0:
            parts.append(text[lt:])
            break
        parts.append(" ")
        pos = gt + 1
    plain = "".join(parts)
    for ent, ch in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&nbsp;", " "), ("&amp;", "&")):
        plain = plain.replace(ent, ch)
    return " ".join(plain.split())


def _haircut(block: str) -> tuple[str, str, str]:
    head, sep, lower = block.partition("\n\n")
    if not sep or not head or "Content-Type:" not in head:
        return ("", "", "")
    ctype, cte = "", ""
    more: list[str] = []  # continuation lines of the Content-Type, joined once (linear)
    for line in head.split("\n"):
        if line.startswith("Content-Type:"):
            value = line.split(" ", 1)[1] if " " in line else ""
            ctype = value if "boundary=" in value else value.lower()
            more = []
        elif line.startswith("Content-Transfer-Encoding:"):
            cte = (line.split(" ", 1)[1] if " " in line else "").lower()
        elif ("boundary=" in line or "charset=" in line) and ctype:
            more.append(line)
    if more:
        ctype = squeeze(" ".join([ctype, *more]), " ")
    rebuilt = "Content-Type: " + ctype + "\n"
    if cte:
        rebuilt += "Content-Transfer-Encoding: " + cte + "\n"
    if lower and lower[0] != "\n":
        rebuilt += "\n"
    return (ctype, cte, rebuilt + lower)


def _levelout(ctype: str, body: str, depth: int = 0) -> list[tuple[str, str, str]]:
    delim = boundary(ctype, 0)
    if not delim or not body or depth > 8:
        return []
    parts = body.split(delim + "\n")
    if parts and len(parts[0]) < 8:
        parts = parts[1:]
    if parts and len(parts[-1]) < 8:
        parts = parts[:-2]
    table: list[tuple[str, str, str]] = []
    for j, part in enumerate(parts):
        if j > 0 and not part.startswith("Content-"):
            # A part without headers is text/plain by default (RFC 2046 5.1)
            part = "Content-Type: text/plain\n\n" + part
        ctp, cte, rebuilt = _haircut(part)
        if "multipart/" in ctp:
            inner_delim = boundary(ctp, -1)
            if not inner_delim:
                continue
            inside = rebuilt.split("\n\n", 1)[1] if "\n\n" in rebuilt else ""
            if len(inside) < 8 or inner_delim not in inside:
                continue
            table.extend(_levelout(ctp, inside, depth + 1))
            continue
        content = rebuilt or part
        if ctp and content and "\n\n" in content:
            content = content.split("\n\n", 1)[1]
        table.append((ctp, cte, content))
    if table:
        end = delim + "--"
        ctp, cte, content = table[-1]
        if end in content:
            table[-1] = (ctp, cte, content.split(end, 1)[0])
    return table


_FLAT_NAMES = (
    ("CONTENT-TYPE:", "Content-Type:"),
    ("Content-type:", "Content-Type:"),
    ("content-type:", "Content-Type:"),
    ("CONTENT-TRANSFER-ENCODING:", "Content-Transfer-Encoding:"),
    ("content-transfer-encoding:", "Content-Transfer-Encoding:"),
    ("CHARSET=", "charset="),
    ("CharSet=", "charset="),
    ("Charset=", "charset="),
    ("BOUNDARY=", "boundary="),
    ("Boundary=", "boundary="),
    ("message/xdelivery-status", "message/delivery-status"),
)
_KEEP_TYPE = ("/delivery-status", "/rfc822", "/feedback-report", "/partial")


def make_flat(ctype: str, payload: str) -> str | None:
    """Flatten a multipart body: decode text/* and message/* parts and join them."""
    lhead = ctype.lower()
    if "multipart/" not in lhead and "boundary=" not in lhead:
        return None
    for old, new in _FLAT_NAMES:
        if old in payload:
            payload = payload.replace(old, new)
    out: list[str] = []
    for ctp, cte, body in _levelout(ctype, payload):
        media = parameter(ctp, "") if ctp else "text/plain"
        if "text/" not in media and "message/" not in media:
            continue
        is_html = media == "text/html"
        if is_html and "multipart/alternative" in lhead:
            continue
        if cte:
            if cte == "base64":
                body = decode_base64(body)
            elif cte == "quoted-printable":
                body = decode_qp(body)
            if is_html:
                body = to_plain(body)
            if not body:
                continue
            body = to_lf(body)
        if any(k in media for k in _KEEP_TYPE):
            body = "Content-Type: " + media + "\n" + body
        if not body.endswith("\n\n"):
            body += "\n\n"
        out.append(body)
    return "".join(out)


def prepare_body(message: Message) -> None:
    """Tidy the body, decode it and flatten multipart bodies (in place)."""
    payload = tidy(message.payload)
    ctype = message.header("content-type").lower()
    cte = message.header("content-transfer-encoding").lower()
    if ctype.startswith(("text/plain", "text/html")):
        if cte == "base64":
            payload = decode_base64(payload)
        elif cte == "quoted-printable":
            payload = decode_qp(payload)
        if ctype.startswith("text/html"):
            payload = to_plain(payload)
    elif ctype.startswith("multipart/"):
        flat = make_flat(message.header("content-type"), payload)
        if flat is not None:
            payload = flat
    message.payload = to_lf(payload).replace("\t", " ")
