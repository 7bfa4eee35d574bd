"""``SendJob``: the one typed contract between every producer and every worker.

It crosses the queue as JSON. A new field always gets a default, so that a worker one version
ahead still reads old messages. ``docs/sendjob.schema.json`` is generated from this model.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, EMAIL_MAX_LENGTH
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from config import fastjson

MAX_SUBJECT = 998  # RFC 5322 §2.1.1: a line is at most 998 characters
MAX_ATTACHMENTS_BYTES = 25 * 1024 * 1024
MAX_METADATA_BYTES = 8 * 1024
#: headers a job may not set: we own them (identity, routing, threading, authentication)
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From",
        "Sender",
        "To",
        "Cc",
        "Bcc",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Return-Path",
        "DKIM-Signature",
        "Received",
    )
)
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 §3.6.8 ftext, no colon
_FORBIDDEN_CHARS = re.compile(r"[\r\n\x00]")


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


class Channel(StrEnum):
    """The delivery channels; each has its own queue."""

    MSC = "msc"
    GMAIL = "gmail"
    SMTP = "smtp"


def _single_line(value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:  # three scans beat one regex here
        raise ValueError("must not contain CR, LF or NUL (header injection)")
    return value


#: the common shape of an address, a subset of what email-validator accepts: a plain ASCII
#: dot-atom local part and an LDH domain. Such an address is valid exactly when its domain is, and
#: email-validator spends most of its ~35 µs on the domain, which a batch shares across recipients.
_PLAIN = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\Z")


@functools.lru_cache(maxsize=4096)
def _plain_domain(domain: str) -> tuple[str, str] | None:
    """email-validator's (normalized, ASCII) form of a domain, or None where it refuses it."""
    try:
        checked = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    return checked.domain, checked.ascii_domain


def _plain_address(address: str) -> str | None:
    """What email-validator would return for a plain address, or None to ask it in full."""
    match = _PLAIN.match(address)
    if match is None:
        return None
    local, _, domain = address.partition("@")  # the pattern admits one @
    known = _plain_domain(domain)
    if known is None:
        return None  # the full check words the error
    normalized, ascii_domain = known
    if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:  # postmaster, abuse... (RFC 2142)
        local = local.lower()
    result = f"{local}@{normalized}"
    if normalized is ascii_domain or normalized == ascii_domain:  # all ASCII: one length
        return result if len(result) <= EMAIL_MAX_LENGTH else None
    longest = max(len(address), len(result.encode()), len(local) + 1 + len(ascii_domain))
    return result if longest <= EMAIL_MAX_LENGTH else None


#: small on purpose: a worker validates ~every address once, and a large cache only grows its
#: memory (64k entries were ~15 MB per process); repeated identities still hit it
@functools.lru_cache(maxsize=4096)
def _check_address(address: str) -> str:
    _single_line(address)
    plain = _plain_address(address)
    if plain is not None:
        return plain
    try:
        # syntax only: deliverability (DNS) is the relay's business, and there is no network here
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None


EmailAddress = Annotated[str, AfterValidator(_check_address)]
#: a single line of 1..200 characters (owner, idempotency key). Every length limit is written
#: before the single-line check, so that pydantic-core checks it on the str itself: a limit
#: given after a Python validator costs one more Python call per field.
Line200 = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_single_line)]

_NAME_ADDR = re.compile(r'^\s*"?(?P<name>[^"<]*?)"?\s*<(?P<addr>[^<>]+)>\s*$')


def _mailbox_from_str(value: object) -> object:
    if isinstance(value, str):
        if "<" not in value:  # a bare address (the regex below would find no name either)
            return {"address": value.strip()}
        match = _NAME_ADDR.match(value)
        if match:
            return {"name": match["name"].strip() or None, "address": match["addr"].strip()}
        return {"address": value.strip()}
    return value


class Mailbox(BaseModel):
    """A display name and an address; parsed from ``"Name <addr>"`` or ``"addr"`` too."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(max_length=200), AfterValidator(_single_line)] | None = None
    address: EmailAddress

    def __str__(self) -> str:
        return f"{self.name} <{self.address}>" if self.name else self.address


MailboxIn = Annotated[Mailbox, BeforeValidator(_mailbox_from_str)]


@functools.lru_cache(maxsize=1024)
def _parsed_identity(value: str) -> Mailbox:
    return Mailbox.model_validate(_mailbox_from_str(value))


def _identity_from_str(value: object) -> object:
    """An identity string seen before is the Mailbox it gave then (a sender sends many jobs).

    Building a Mailbox costs as much as a third of a job's validation; a producer has a handful
    of identities. A string that does not validate is not cached: it is handed on as a mapping,
    so that the error names the field inside the mailbox as for any other.
    """
    if isinstance(value, str):
        try:
            return _parsed_identity(value)
        except ValidationError:
            pass
    return _mailbox_from_str(value)


#: an Email Identity or a reply-to: few distinct values, each validated once per process
IdentityIn = Annotated[Mailbox, BeforeValidator(_identity_from_str)]


def _decode_b64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("content must be base64") from None
    return value


class Attachment(BaseModel):
    """A file attached to the message, base64 encoded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    filename: Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_single_line)]
    content_type: Annotated[
        str, Field(pattern=r"^[a-zA-Z0-9!#$&^_.+-]+/[a-zA-Z0-9!#$&^_.+-]+$")
    ] = "application/octet-stream"
    content: Annotated[str, AfterValidator(_decode_b64)]

    @property
    def size(self) -> int:
        """Decoded size in bytes."""
        return len(self.content) * 3 // 4


def _header_map(value: object) -> object:
    if not isinstance(value, dict):
        return value
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"{name!r} is set by maildispatch and cannot be overridden")
        if not isinstance(text, str):
            raise ValueError(f"header {name!r} must be a string")
        if _FORBIDDEN_CHARS.search(text):
            raise ValueError(f"header {name!r} must not contain CR, LF or NUL (header injection)")
    return value


def _metadata_size(value: dict[str, Any]) -> dict[str, Any]:
    # carried with the job, kept in its Redis state and in Failed Sends: JSON, and bounded
    if value:
        try:
            size = len(fastjson.dumps(value))
        except TypeError as exc:  # a Decimal, a set...
            raise ValueError(f"must be JSON data ({exc})") from None
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"larger than {MAX_METADATA_BYTES} bytes as JSON")
    return value


class SendJob(BaseModel):
    """One message to deliver. Built by producers, decoded by workers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    idempotency_key: Line200 | None = None
    owner: Line200
    #: None: the owner's preferred channel, resolved by the producer before enqueueing
    channel: Channel | None = None
    identity: IdentityIn
    to: Annotated[tuple[MailboxIn, ...], Field(default=())]
    cc: tuple[MailboxIn, ...] = ()
    bcc: tuple[MailboxIn, ...] = ()
    reply_to: IdentityIn | None = None
    subject: Annotated[str, Field(max_length=MAX_SUBJECT), AfterValidator(_single_line)] = ""
    text: str | None = None
    html: str | None = None
    headers: Annotated[dict[str, str], BeforeValidator(_header_map)] = Field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    metadata: Annotated[dict[str, Any], AfterValidator(_metadata_size)] = Field(
        default_factory=dict
    )
    send_at: datetime | None = None
    version: Literal[1] = 1

    @model_validator(mode="after")
    def _complete(self) -> SendJob:
        if not (self.to or self.cc or self.bcc):
            raise ValueError("to: at least one recipient (to, cc or bcc) is required")
        if not self.text and not self.html:
            raise ValueError("text: a body is required (text and/or html)")
        if self.send_at is not None and self.send_at.tzinfo is None:
            raise ValueError("send_at: must carry a timezone (e.g. 2026-01-01T09:00:00Z)")
        if self.attachments and sum(a.size for a in self.attachments) > MAX_ATTACHMENTS_BYTES:
            raise ValueError(f"attachments: larger than {MAX_ATTACHMENTS_BYTES} bytes in total")
        return self

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every envelope recipient (to, cc and bcc), in order, without duplicates."""
        boxes = self.to + self.cc + self.bcc if self.cc or self.bcc else self.to
        if len(boxes) == 1:
            return (boxes[0].address,)
        return tuple(dict.fromkeys(box.address for box in boxes))

    def estimated_size(self) -> int:
        """Roughly the size of the built message in bytes, to refuse oversize jobs early."""
        body = _utf8_size(self.text or "") + _utf8_size(self.html or "")
        if self.attachments:
            body += sum(len(a.content) for a in self.attachments)
        return body + 2048


class FieldError(BaseModel):
    """One invalid field of a job."""

    field: str
    message: str


class InvalidJob(ValueError):
    """A job failed validation; ``errors`` names every invalid field. Nothing was enqueued."""

    def __init__(self, errors: list[FieldError], index: int | None = None) -> None:
        self.errors = errors
        self.index = index
        where = f"job {index}: " if index is not None else ""
        super().__init__(where + "; ".join(f"{e.field}: {e.message}" for e in errors))

    @classmethod
    def from_validation(cls, exc: ValidationError, index: int | None = None) -> InvalidJob:
        """Translate pydantic's error list into field-named errors."""
        errors = []
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"]) or "job"
            message = err["msg"].removeprefix("Value error, ")
            if ":" in message and field == "job":
                field, _, message = message.partition(": ")
            errors.append(FieldError(field=field, message=message))
        return cls(errors, index)


def parse_job(data: dict[str, Any] | str | bytes, index: int | None = None) -> SendJob:
    """Validate one job from a dict or JSON text, raising :class:`InvalidJob` on bad input."""
    try:
        if isinstance(data, str | bytes):
            return SendJob.model_validate_json(data)
        return SendJob.model_validate(data)
    except ValidationError as exc:
        raise InvalidJob.from_validation(exc, index) from None
