"""Helpers shared by the MTA-specific decoders."""

from __future__ import annotations

from ..dsn import apply_field, field, match
from ..model import FIELD_MEMBER, Record

__all__ = ["RFC822_PARTS", "DsnFields", "Records"]

RFC822_PARTS = ("Content-Type: message/rfc822", "Content-Type: text/rfc822-headers")


class Records:
    """The list of recipients being built; ``cur`` is the one being filled."""

    __slots__ = ("count", "items")

    def __init__(self) -> None:
        self.items: list[Record] = [Record()]
        self.count = 0

    @property
    def cur(self) -> Record:
        """The record being filled."""
        return self.items[-1]

    def add(self, recipient: str) -> Record:
        """Start a new record (reusing the empty first one) for ``recipient``."""
        rec = self.items[-1]
        if rec.recipient:
            rec = Record()
            self.items.append(rec)
        rec.recipient = recipient
        self.count += 1
        return rec

    def push(self) -> Record:
        """Append an empty record when the current one already has a recipient."""
        rec = self.items[-1]
        if rec.recipient:
            rec = Record()
            self.items.append(rec)
        return rec


class DsnFields:
    """Collects RFC 3464 fields embedded in a vendor bounce (Sendmail, Courier, ...)."""

    __slots__ = ("keys", "permessage")

    def __init__(self) -> None:
        self.permessage: dict[str, str] = {}
        self.keys: list[str] = []

    def feed(self, line: str, recs: Records, keep_code: bool = True) -> bool:
        """Store a DSN field line into ``recs``; return False when it is not one."""
        kind = match(line)
        if not kind:
            return False
        parsed = field(line)
        if not parsed:
            return True
        rec = recs.cur
        if parsed[3] == "addr":
            if parsed[0] == "final-recipient":
                recs.add(parsed[2])
            else:
                rec.alias = parsed[2]
        elif parsed[3] == "code":
            rec.spec = parsed[1]
            if keep_code:
                rec.diagnosis = parsed[2]
        else:
            apply_field(rec, parsed)
            if kind == 1:
                member = FIELD_MEMBER.get(parsed[0], parsed[0])
                self.permessage[member] = parsed[2]
                if member not in self.keys:
                    self.keys.append(member)
        return True

    def spread(self, recs: Records) -> None:
        """Copy per-message values (Reporting-MTA, Arrival-Date) into every record."""
        last = recs.items[-1]
        for rec in recs.items:
            for key in self.keys:
                # Sisimai looks at the last record here, not at each one
                if last.get(key) or not self.permessage.get(key):
                    continue
                rec.set(key, self.permessage[key])
