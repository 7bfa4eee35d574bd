"""Data types of the bounce parser: the public report and the decoders' working record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Bounce", "BounceReport", "Message", "Record", "Rising"]

ReportKind = Literal["bounce", "delay", "feedback", "autoreply", "unknown"]


@dataclass(frozen=True, slots=True)
class Bounce:
    """One recipient of a bounce, delay notice, feedback report or auto-reply."""

    recipient: str
    action: str
    status: str
    reply_code: str
    reason: str
    hard: bool
    diagnostic: str
    #: how the reason and the status were found (``bounces parse --explain``)
    why: str = field(default="", compare=False)

    def as_json(self) -> dict[str, Any]:
        """Return the JSON form printed by ``maildispatch bounces parse --json``."""
        return {
            "recipient": self.recipient,
            "action": self.action,
            "status": self.status,
            "reply_code": self.reply_code,
            "reason": self.reason,
            "hard": self.hard,
            "diagnostic": self.diagnostic,
        }


@dataclass(frozen=True, slots=True)
class BounceReport:
    """Everything the parser learned from one inbound report message."""

    bounces: tuple[Bounce, ...] = ()
    kind: ReportKind = "unknown"
    feedback_type: str | None = None
    envelope_recipients: tuple[str, ...] = ()
    original_message_id: str | None = None
    original_headers: dict[str, str] = field(default_factory=dict)
    #: the format that read it (a registered decoder's name, "RFC3464", "ARF", "RFC3834"), or ""
    decoder: str = ""


# Field names of a DSN per-recipient group mapped onto Record attributes (RFC 3464 2.3).
FIELD_MEMBER: dict[str, str] = {
    "action": "action",
    "arrival-date": "date",
    "diagnostic-code": "diagnosis",
    "final-recipient": "recipient",
    "last-attempt-date": "date",
    "original-recipient": "alias",
    "received-from-mta": "rhost",
    "remote-mta": "rhost",
    "reporting-mta": "lhost",
    "status": "status",
    "x-actual-recipient": "alias",
}


#: longest diagnostic a record keeps (rows store 2,000 characters). Decoders append a report's
#: lines one by one (``rec.diagnosis += " " + line``): unbounded, that copies the whole text at
#: every line, quadratic in the report's size; capped, each append costs at most this much.
DIAGNOSIS_MAX = 8192


class Record:
    """A recipient being decoded (Sisimai's DeliveryMatter); mutable on purpose."""

    MEMBERS = (
        "action",
        "agent",
        "alias",
        "command",
        "date",
        "diagnosis",
        "feedback_type",
        "lhost",
        "reason",
        "recipient",
        "reply_code",
        "rhost",
        "spec",
        "status",
    )
    __slots__ = (
        "_diagnosis",
        "action",
        "agent",
        "alias",
        "command",
        "date",
        "feedback_type",
        "lhost",
        "reason",
        "recipient",
        "reply_code",
        "rhost",
        "spec",
        "status",
    )

    def __init__(self) -> None:
        self.action = ""
        self.agent = ""
        self.alias = ""
        self.command = ""
        self.date = ""
        self._diagnosis = ""
        self.feedback_type = ""
        self.lhost = ""
        self.reason = ""
        self.recipient = ""
        self.reply_code = ""
        self.rhost = ""
        self.spec = ""
        self.status = ""

    @property
    def diagnosis(self) -> str:
        """The diagnostic text gathered so far (at most :data:`DIAGNOSIS_MAX` characters)."""
        return self._diagnosis

    @diagnosis.setter
    def diagnosis(self, value: str) -> None:
        self._diagnosis = value if len(value) <= DIAGNOSIS_MAX else value[:DIAGNOSIS_MAX]

    def get(self, member: str) -> str:
        """Return a member by name ('' for an unknown name)."""
        value: str = getattr(self, member, "")
        return value

    def set(self, member: str, value: str) -> None:
        """Set a member by name; unknown names are ignored."""
        if member in Record.MEMBERS:
            setattr(self, member, value)


@dataclass(slots=True)
class Message:
    """A bounce message split into headers and a flattened, decoded body."""

    headers: dict[str, list[str]]
    payload: str

    def header(self, name: str) -> str:
        """Return the first value of a header ('' when absent)."""
        values = self.headers.get(name)
        return values[0] if values else ""


@dataclass(slots=True)
class Rising:
    """What a decoder returns: the recipients and the returned original headers."""

    records: list[Record]
    rfc822: str
