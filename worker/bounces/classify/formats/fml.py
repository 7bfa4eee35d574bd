"""The FML format: decode an error returned by the fml mailing list manager."""

from __future__ import annotations

from ..dsn import split_original
from ..model import Message, Rising
from ..text import first_reason, select, sweep
from .base import Records
from .registry import register

_FML_TITLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "rejected",
        (
            " are not member",
            "NOT MEMBER article from ",
            "reject mail ",
            "Spam mail from a spammer is rejected",
        ),
    ),
    (
        "systemerror",
        (
            "fml system error message",
            "Loop Alert: ",
            "Loop Back Warning: ",
            "WARNING: UNIX FROM Loop",
        ),
    ),
    ("securityerror", ("Security Alert",)),
)


_FML_TABLE: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "rejected",
        (
            " header may cause mail loop",
            "NOT MEMBER article from ",
            "reject mail from ",
            "reject spammers:",
            "You are not a member of this mailing list",
        ),
    ),
    ("securityerror", ("Security alert:",)),
    (
        "systemerror",
        (" has detected a loop condition so that", "Loop Back Warning:", "Duplicated Message-ID"),
    ),
)


@register("FML", order=70)
def fml(msg: Message) -> Rising | None:
    """Decode an error returned by the fml mailing list manager."""
    if not msg.headers.get("x-mlserver") or msg.header("from").find("-admin@") < 1:
        return None
    if msg.header("message-id").find(".FML") < 2:
        return None
    former, latter = split_original(msg.payload, ("Original mail as follows:",))
    recs = Records()
    for line in former.split("\n"):
        if not line:
            continue
        addr = select(line, "<", ">")
        if addr:
            recs.add(addr).diagnosis = line
        else:
            recs.cur.diagnosis += line
    if not recs.count:
        return None
    for rec in recs.items:
        rec.diagnosis = sweep(rec.diagnosis)
        rec.reason = first_reason(_FML_TABLE, rec.diagnosis) or first_reason(
            _FML_TITLES, msg.header("subject")
        )
    return Rising(records=recs.items, rfc822=latter)
