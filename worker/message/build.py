"""SendJob -> RFC 5322 message: headers, identity, a Message-ID stable per job, DKIM.

The message is composed from the stdlib's encoders (``formataddr``, ``Header``, ``quopri``,
``base64``) rather than through ``EmailMessage``: the latter's header objects alone would cap a
worker below the relay's speed (docs/decisions.md).
Bcc recipients go in the envelope only, never in a header.
"""

from __future__ import annotations

import base64
import quopri
import re
import uuid
from collections.abc import Iterable, Sequence
from email.header import Header
from email.utils import formataddr, formatdate

from producers.headers import MAX_LINE, without_controls
from producers.job import Mailbox, SendJob, ascii_domain
from worker.channels.base import OutgoingMessage
from worker.message import dkim as dkimsign
from worker.message.dkim import DkimKey

CRLF = "\r\n"
#: headers DKIM signs (RFC 6376 §5.4.1's recommendations that we set)
DKIM_HEADERS = [
    b"from",
    b"sender",
    b"reply-to",
    b"subject",
    b"date",
    b"message-id",
    b"to",
    b"cc",
    b"mime-version",
    b"content-type",
    # signed where present, signed as absent elsewhere (RFC 8058 §4: covered by the signature)
    b"list-unsubscribe",
    b"list-unsubscribe-post",
]
#: where a header is folded when it can be (RFC 5322 §2.1.1's SHOULD); never past MAX_LINE
FOLD_AT = 78
#: the places an ASCII value may be folded: before a run of white space that follows a word
_FOLD_POINTS = re.compile(r"(?<=[^ \t])(?=[ \t])")


def message_id(job_id: uuid.UUID, domain: str) -> str:
    """``<job-uuid@domain>``: the same on every attempt, so a duplicate is recognisable."""
    return f"<{job_id}@{domain}>"


def _encode_address(box: Mailbox) -> str:
    """``name <address>``; an IDN domain as its A-label, as validation writes it (the envelope
    has the same); a non-ASCII name as encoded words, folded (RFC 2047 §5(3), a phrase)."""
    local, _, domain = box.address.rpartition("@")
    address = f"{local}@{ascii_domain(domain)}"
    name = without_controls(box.name or "")
    if _plain(name):
        return formataddr((name, address))
    words = Header(name, "utf-8", maxlinelen=FOLD_AT).encode(splitchars=" ", linesep=CRLF)
    return f"{words}{CRLF} <{address}>"


def _header(name: str, value: str) -> str:
    """A header field, folded into lines of at most 78 characters where it can be and never
    more than 998 (RFC 5322 §2.1.1): an ASCII value at its white space, anything else (a
    non-ASCII value, a word too long for a line) as encoded words, which break anywhere."""
    value = without_controls(value)
    if _plain(value):
        if len(name) + 2 + len(value) <= FOLD_AT:
            return f"{name}: {value}{CRLF}"
        lines = _fold(f"{name}: {value}")
        if max(map(len, lines)) <= MAX_LINE:
            return CRLF.join(lines) + CRLF
    folded = Header(value, "utf-8", header_name=name, maxlinelen=FOLD_AT)
    return f"{name}: {folded.encode(linesep=CRLF)}{CRLF}"


def _extra_header(name: str, value: str) -> str:
    """A header field the producer gave (or maildispatch adds), folded at its white space. Such
    fields are often structured (``List-Id``, ``List-Unsubscribe``, ``References``): a value
    turned into encoded words as a whole would hide its angle brackets and URIs from readers.
    So only runs of words a reader could not take as they are (non-ASCII, or looking like an
    encoded word) become encoded words (RFC 2047 §5), each run one text so that the spaces inside
    it survive decoding; other words, and any ASCII word in angle brackets, stay as given. An
    ASCII value folds into lines of 998 (the producer's ``check_header``)."""
    value = without_controls(value)
    if not _plain(value):
        value = _encode_words(value)
    if len(name) + 2 + len(value) <= FOLD_AT:
        return f"{name}: {value}{CRLF}"
    return CRLF.join(_fold(f"{name}: {value}")) + CRLF


def _encode_words(value: str) -> str:
    pieces = _WORDS.split(value)  # words at even positions, the white space between at odd ones
    out: list[str] = []
    run: list[str] = []  # a run of words to encode, with the white space between them
    for i, piece in enumerate(pieces):
        if i % 2:  # white space: inside a run it is part of its text
            (run if run else out).append(piece)
            continue
        literal = _plain(piece) or (piece.isascii() and piece.startswith("<"))
        if not literal or not piece:
            run.append(piece)
            continue
        if run:
            out.append(_encoded(run))
            run = []
        out.append(piece)
    if run:
        out.append(_encoded(run))
    return "".join(out)


def _encoded(run: list[str]) -> str:
    """A run of words as encoded words of at most 75 characters, separated by spaces (a reader
    joins adjacent encoded words without the white space between them); white space after the
    run's last word stays outside it."""
    trailing = ""
    while run and not run[-1].strip():
        trailing = run.pop() + trailing
    words = Header("".join(run), "utf-8", maxlinelen=FOLD_AT).encode(linesep=CRLF)
    return " ".join(words.split()) + trailing


_WORDS = re.compile(r"([ \t]+)")


def _plain(text: str) -> bool:
    """Whether text can stand in a header as it is: ASCII, and nothing a reader would decode
    as an RFC 2047 encoded word (``=?...?=``); anything else goes as encoded words itself."""
    return text.isascii() and "=?" not in text


def _fold(line: str) -> list[str]:
    """An ASCII header line folded before white space (the white space starts the next line)."""
    lines: list[str] = []
    current = ""
    for piece in _FOLD_POINTS.split(line):
        # a piece is a word with the white space before it; one of white space only stays on
        # the line (a line of white space alone would end the header when unfolded by some)
        if current and len(current) + len(piece) > FOLD_AT and piece.strip():
            lines.append(current)
            current = piece
        else:
            current += piece
    lines.append(current)
    return lines


def _address_list(name: str, boxes: Iterable[Mailbox]) -> str:
    return f"{name}: {(',' + CRLF + ' ').join(_encode_address(b) for b in boxes)}{CRLF}"


def _text_part(text: str, subtype: str) -> str:
    body = text.replace("\r\n", "\n")
    if "\r" in body:  # a bare CR may not travel (RFC 5321 §2.3.8): a line break, as MTAs make it
        body = body.replace("\r", "\n")
    # (split and len rather than a backtracking regex for "999 non-newlines": docs/performance.md)
    # 7bit holds no NUL (RFC 2045 §2.7): such a body goes quoted-printable
    if (
        body.isascii()
        and (len(body) <= MAX_LINE or max(map(len, body.split("\n"))) <= MAX_LINE)
        and "\x00" not in body
    ):
        cte, encoded = "7bit", body
    else:
        cte = "quoted-printable"
        encoded = quopri.encodestring(body.encode()).decode("ascii")
    encoded = encoded.replace("\n", CRLF)
    if not encoded.endswith(CRLF):
        encoded += CRLF
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: {cte}{CRLF}{CRLF}{encoded}"
    )


def _multipart(subtype: str, boundary: str, parts: list[str]) -> str:
    # the CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1), hence the extra one
    inner = "".join(f"--{boundary}{CRLF}{p}{CRLF}" for p in parts)
    return (
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"{CRLF}{CRLF}'
        f"{inner}--{boundary}--{CRLF}"
    )


def _body(job: SendJob) -> str:
    alternatives = []
    if job.text is not None:
        alternatives.append(_text_part(job.text, "plain"))
    if job.html is not None:
        alternatives.append(_text_part(job.html, "html"))
    tag = job.id.hex
    body = (
        alternatives[0]
        if len(alternatives) == 1
        else _multipart("alternative", f"alt-{tag}", alternatives)
    )
    if not job.attachments:
        return body
    parts = [body]
    for att in job.attachments:
        data = base64.encodebytes(base64.b64decode(att.content)).decode().replace("\n", CRLF)
        filename = without_controls(att.filename)
        if _plain(filename):
            quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
            disposition = f'attachment; filename="{quoted}"'
        else:
            disposition = "attachment;" + _rfc2231("filename", filename)
        parts.append(
            f"Content-Type: {att.content_type}{CRLF}"
            f"Content-Transfer-Encoding: base64{CRLF}"
            f"Content-Disposition: {disposition}{CRLF}{CRLF}{data}"
        )
    return _multipart("mixed", f"mix-{tag}", parts)


def _rfc2231(param: str, value: str) -> str:
    """``param*0*=utf-8''...`` continuations of at most ~70 characters a line (RFC 2231 §3-4):
    a 255-character name percent-encoded is up to 3,060 characters."""
    from urllib.parse import quote

    encoded = "utf-8''" + quote(value, safe="")
    chunks: list[str] = []
    while encoded:
        cut = min(len(encoded), 60)
        while "%" in encoded[max(cut - 2, 0) : cut]:  # never split a %XX escape
            cut -= 1
        chunks.append(encoded[:cut])
        encoded = encoded[cut:]
    return "".join(f"{CRLF} {param}*{i}*={chunk};" for i, chunk in enumerate(chunks)).rstrip(";")


def build_message(
    job: SendJob,
    *,
    domain: str,
    sender: str | None = None,
    from_address: str | None = None,
    date: float | None = None,
    dkim_key: DkimKey | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
    dkim_keys: Sequence[DkimKey] = (),
) -> OutgoingMessage:
    """Build the message bytes for a job.

    ``sender``: the Sender header (MSC: an address at the operator's domain); ``from_address``
    replaces the identity's address (Gmail: always the connected account), keeping its name;
    ``extra_headers`` are maildispatch's own (List-Unsubscribe); ``dkim_key`` and each of
    ``dkim_keys`` sign the message (each signature over the message without the others).
    """
    identity = job.identity
    if from_address and from_address != identity.address:
        identity = Mailbox(name=identity.name, address=from_address)
    mid = message_id(job.id, domain)
    head = [_address_list("From", [identity])]
    if sender:
        head.append(f"Sender: {sender}{CRLF}")
    if job.to:
        head.append(_address_list("To", job.to))
    if job.cc:
        head.append(_address_list("Cc", job.cc))
    if job.reply_to:
        head.append(_address_list("Reply-To", [job.reply_to]))
    head.append(_header("Subject", job.subject))
    head.append(f"Date: {formatdate(date, usegmt=True)}{CRLF}")
    head.append(f"Message-ID: {mid}{CRLF}")
    for name, value in job.headers.items():
        head.append(_extra_header(name, value))
    for name, value in extra_headers:
        head.append(_extra_header(name, value))
    head.append(f"MIME-Version: 1.0{CRLF}")
    data = ("".join(head) + _body(job)).encode("utf-8")
    keys = (*dkim_keys, dkim_key) if dkim_key is not None else tuple(dkim_keys)
    if keys:
        data = b"".join(sign(data, key) for key in keys) + data
    return OutgoingMessage(data=data, from_address=identity.address, message_id=mid)


def sign(data: bytes, key: DkimKey) -> bytes:
    """The DKIM-Signature header (ending in CRLF) for a message (worker/message/dkim.py)."""
    return dkimsign.sign(data, key.selector, key.domain, key.private_key, DKIM_HEADERS)
