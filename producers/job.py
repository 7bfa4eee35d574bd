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
    ValidationInfo,
    model_validator,
)

from config import fastjson
from config.channels import CHANNELS
from config.errors import MaildispatchError
from producers.headers import MAX_HEADER_VALUE, check_header, header_name, header_text

MAX_SUBJECT = 998  # RFC 5322 §2.1.1: a line is at most 998 characters
MAX_ATTACHMENTS_BYTES = 25 * 1024 * 1024
MAX_METADATA_BYTES = 8 * 1024
#: the validation context's key for the deployment's bound on recipients per job
MAX_RECIPIENTS = "max_recipients"
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


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


#: the delivery channels of config/channels.py (a new channel is a line there, not here)
Channel = StrEnum("Channel", {name.upper(): name for name in CHANNELS})  # type: ignore[misc]
Channel.__doc__ = "The delivery channels; each has its own queue."


def _unicode_text(value: str) -> str:
    """A body must be text that UTF-8 can carry: a lone surrogate (what Python makes of a byte
    that did not decode, e.g. in a command-line argument) would only fail once the job is on its
    way to the queue, after other jobs of the same call went out."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"must be Unicode text: a lone surrogate at position {exc.start} "
                "(bytes that were not decoded as UTF-8?)"
            ) from None
    return value


#: a message body: text or HTML
Body = Annotated[str, AfterValidator(_unicode_text)]


def _single_line(value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:  # three scans beat one regex here
        raise ValueError("must not contain CR, LF or NUL (header injection)")
    return value


#: the common shape of an address, a subset of what email-validator accepts: a plain ASCII
#: dot-atom local part and an LDH domain. Such an address is valid exactly when its domain is, and
#: email-validator spends most of its time on the domain, which a batch shares across recipients.
#: An address is kept in its ASCII form: an internationalized domain as its A-label (punycode,
#: IDNA 2008 as email-validator writes it), the same in the envelope, the headers and the store;
#: a non-ASCII local part needs SMTPUTF8 end to end, which maildispatch does not do: refused.
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
    _, ascii_domain = known
    if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:  # postmaster, abuse... (RFC 2142)
        local = local.lower()
    result = f"{local}@{ascii_domain}"
    return result if len(result) <= EMAIL_MAX_LENGTH else None


#: small on purpose: a worker validates ~every address once, and a large cache only grows its
#: memory (docs/performance.md); repeated identities still hit it
@functools.lru_cache(maxsize=4096)
def _check_address(address: str) -> str:
    _single_line(address)
    plain = _plain_address(address)
    if plain is not None:
        return plain
    local = address.rpartition("@")[0]
    if not local.isascii():
        raise ValueError(
            "not a valid email address: non-ASCII characters before the @ need SMTPUTF8, "
            "which maildispatch does not send"
        )
    try:
        # syntax only: deliverability (DNS) is the relay's business, and there is no network here
        checked = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None
    assert checked.ascii_email is not None  # an ASCII local part has an ASCII form
    if len(checked.ascii_email) > EMAIL_MAX_LENGTH:  # an A-label is longer than its U-label
        raise ValueError(f"not a valid email address: longer than {EMAIL_MAX_LENGTH} as ASCII")
    return checked.ascii_email


def ascii_domain(domain: str) -> str:
    """A domain as validation writes it in an address (the A-label of an IDN), for the builder."""
    if domain.isascii():
        return domain
    known = _plain_domain(domain)
    return known[1] if known else domain


EmailAddress = Annotated[str, AfterValidator(_check_address)]
#: a single line of 1..200 characters (owner, idempotency key). Every length limit is written
#: before the single-line check, so that pydantic-core checks it on the str itself: a limit
#: given after a Python validator costs one more Python call per field.
Line200 = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_single_line)]

_NAME_ADDR = re.compile(r'\s*"?(?P<name>[^"<]*?)"?\s*<(?P<addr>[^<>]+)>\s*')  # fullmatch


def _mailbox_from_str(value: object) -> object:
    if isinstance(value, str):
        if "<" not in value:  # a bare address (the regex below would find no name either)
            return {"address": value.strip()}
        match = _NAME_ADDR.fullmatch(value)
        if match:
            return {"name": match["name"].strip() or None, "address": match["addr"].strip()}
        return {"address": value.strip()}
    return value


class Mailbox(BaseModel):
    """A display name and an address; parsed from ``"Name <addr>"`` or ``"addr"`` too."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(max_length=200), AfterValidator(header_text)] | None = None
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


def _leaf_type(value: str) -> str:
    # an attachment is sent in base64, which a composite type may not use (RFC 2045 §6.4,
    # RFC 2046 §5): a multipart would need its boundary, a message/rfc822 would be read as one
    if value.lower().startswith(("multipart/", "message/")):
        raise ValueError(
            f"{value!r} cannot be an attachment's type (a composite type is not sent in base64):"
            " use application/octet-stream"
        )
    return value


class Attachment(BaseModel):
    """A file attached to the message, base64 encoded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    filename: Annotated[str, Field(min_length=1, max_length=255), AfterValidator(header_text)]
    # RFC 6838 §4.2: type and subtype are at most 127 characters each. The pattern runs in
    # pydantic-core's Rust regex engine, where `$` is the end of the text only (as in a JSON
    # Schema validator); tests/unit/test_headers.py checks that a final newline is refused
    content_type: Annotated[
        str,
        Field(max_length=255, pattern=r"^[a-zA-Z0-9!#$&^_.+-]+/[a-zA-Z0-9!#$&^_.+-]+$"),
        AfterValidator(_leaf_type),
    ] = "application/octet-stream"
    content: Annotated[str, AfterValidator(_decode_b64)]

    @property
    def size(self) -> int:
        """Decoded size in bytes."""
        return len(self.content) * 3 // 4


def _header_map(value: object) -> object:
    if not isinstance(value, dict):
        return value
    seen: set[str] = set()
    for name, text in value.items():
        if not isinstance(name, str):
            raise ValueError(f"{name!r} is not a valid header name")
        header_name(name)
        if name.lower() in seen:  # names are case-insensitive: two keys would be two fields
            raise ValueError(f"{name!r} is given twice (header names ignore case)")
        seen.add(name.lower())
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"{name!r} is set by maildispatch and cannot be overridden")
        if not isinstance(text, str):
            raise ValueError(f"header {name!r} must be a string")
        try:
            check_header(name, text)
        except ValueError as exc:
            raise ValueError(f"header {name!r} {exc}") from None
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
    subject: Annotated[str, Field(max_length=MAX_SUBJECT), AfterValidator(header_text)] = ""
    text: Body | None = None
    html: Body | None = None
    headers: Annotated[
        dict[str, Annotated[str, Field(max_length=MAX_HEADER_VALUE)]],
        BeforeValidator(_header_map),
    ] = Field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    metadata: Annotated[dict[str, Any], AfterValidator(_metadata_size)] = Field(
        default_factory=dict
    )
    send_at: datetime | None = None
    #: List-Unsubscribe (one click, RFC 8058) for the job's one recipient: a link that puts the
    #: recipient on the owner's suppression list (worker/message/unsubscribe.py)
    unsubscribe: bool = False
    version: Literal[1] = 1

    @model_validator(mode="before")
    @classmethod
    def _count_first(cls, data: Any, info: ValidationInfo) -> Any:
        """Too many recipients are refused before any address is validated (validation costs
        per address: a job of a million would hold a producer for a long time).

        The bound is the deployment's (``max_recipients`` in the validation context); addresses
        are counted once whatever their case, as the recipients are after validation.
        """
        limit = info.context.get(MAX_RECIPIENTS) if info.context else None
        if limit is not None and isinstance(data, dict):
            given = [data.get(f) for f in ("to", "cc", "bcc")]
            boxes = [b for field in given if isinstance(field, list | tuple) for b in field]
            boxes += [field for field in given if isinstance(field, str)]
            if len(boxes) > limit and len({_raw_address(b) for b in boxes}) > limit:
                raise ValueError(f"to: more than {limit} recipients")
        return data

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
        if self.unsubscribe:
            if len(self.recipients) != 1:
                raise ValueError(
                    "unsubscribe: needs exactly one recipient (its link unsubscribes that "
                    "person): send one job per recipient"
                )
            if {h.lower() for h in self.headers} & {"list-unsubscribe", "list-unsubscribe-post"}:
                raise ValueError("unsubscribe: maildispatch writes the List-Unsubscribe headers")
        return self

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every envelope recipient (to, cc and bcc), in order, without duplicates."""
        boxes = self.to + self.cc + self.bcc if self.cc or self.bcc else self.to
        if len(boxes) == 1:
            return (boxes[0].address,)
        return tuple(dict.fromkeys(box.address for box in boxes))

    def header_size(self) -> int:
        """The bytes the job's own header fields take: addresses, names, subject, extra headers."""
        boxes = [self.identity, *self.to, *self.cc]
        if self.reply_to is not None:
            boxes.append(self.reply_to)
        size = _utf8_size(self.subject) + sum(
            len(b.address) + (_utf8_size(b.name) if b.name else 0) + 8 for b in boxes
        )
        if self.headers:
            size += sum(len(n) + _utf8_size(v) + 4 for n, v in self.headers.items())
        if self.attachments:
            size += sum(
                _utf8_size(a.filename) + len(a.content_type) + 120 for a in self.attachments
            )
        return size

    def estimated_size(self) -> int:
        """Roughly the size of the built message in bytes, headers included, to refuse oversize
        jobs early (2 KiB for what maildispatch adds: Date, Message-ID, MIME, DKIM)."""
        body = _utf8_size(self.text or "") + _utf8_size(self.html or "")
        if self.attachments:
            body += sum(len(a.content) for a in self.attachments)
        return body + self.header_size() + 2048


def _raw_address(box: object) -> str:
    """The address of a mailbox as given, before validation (only to count recipients)."""
    if isinstance(box, dict):
        box = box.get("address", "")
    text = str(box)
    if "<" in text:
        text = text.rpartition("<")[2].partition(">")[0]
    return text.strip().lower()


class FieldError(BaseModel):
    """One invalid field of a job."""

    field: str
    message: str


class InvalidJob(MaildispatchError, ValueError):
    """A job failed validation; ``errors`` names every invalid field. Nothing was enqueued."""

    exit_code = 2
    http_status = 422

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


def limits(max_recipients: int | None) -> dict[str, Any] | None:
    """The validation context for a deployment's limits (``SendJob.model_validate(context=)``)."""
    return None if max_recipients is None else {MAX_RECIPIENTS: max_recipients}


def parse_job(
    data: dict[str, Any] | str | bytes,
    index: int | None = None,
    *,
    max_recipients: int | None = None,
) -> SendJob:
    """Validate one job from a dict or JSON text, raising :class:`InvalidJob` on bad input.

    ``max_recipients``: more recipients are refused before any address is validated.
    """
    context = limits(max_recipients)
    try:
        if isinstance(data, str | bytes):
            return SendJob.model_validate_json(data, context=context)
        return SendJob.model_validate(data, context=context)
    except ValidationError as exc:
        raise InvalidJob.from_validation(exc, index) from None
