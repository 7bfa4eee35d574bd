"""A delay *warning* or a final *expiry*: both often parse as reason ``expired``, action
``delayed`` (Sisimai's convention), but only the second is a failure.

"Will be retried" is a warning; "gave up after 5 days", "not going to try again", "not collected
after 30 days" is a failure the sender must hear of. The markers below tell them apart, looked
for in the notice itself, before the quoted original message; the parser then reports a final
expiry as ``failed`` (so ``bounces parse`` and the ingest agree), and a report only the text
fallback read is a failure only when it is not a warning.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from .model import Bounce

_QUOTED = re.compile(
    rb"(?im)content-type:[ \t]*(message/rfc822|text/rfc822-headers|message/global)"
    rb"|^-+ ?(original message|this is a copy)"
)
_WARNING_STRONG = re.compile(
    rb"(?im)warning (message )?only|do not need to resend|will be retried|retried for \d+ more"
    rb"|still being retried|will keep trying|^will-retry-until:|(attempts|delivery) will continue"
    rb"|will (continue to )?(try|attempt) (again|to deliver)"
)
_ACTION = re.compile(rb"(?im)^action:[ \t]*(failed|delayed)\b")
_WARNING_WEAK = re.compile(
    rb"(?i)warning|\bdelay(ed)?\b|will[- ]retry|not (yet )?been delivered yet"
)
_FINAL_WORDS = re.compile(
    rb"(?i)fail|undeliver|returned|could not be delivered|gave up|giving up|permanent|error"
    rb"|expired|rejected"
)


def is_delay_warning(raw: bytes) -> bool:
    """Is this notice a warning that delivery is still being retried (not a final failure)?"""
    quoted = _QUOTED.search(raw)
    head = raw[: quoted.start()] if quoted else raw[:20000]
    if _WARNING_STRONG.search(head):
        return True
    actions = {a.lower() for a in _ACTION.findall(raw)}
    if b"failed" in actions:
        return False
    if b"delayed" in actions:
        return True
    return bool(_WARNING_WEAK.search(head)) and not _FINAL_WORDS.search(head)


def settle(bounces: Sequence[Bounce], raw: bytes, decoder: str) -> list[Bounce]:
    """``bounces`` with a final expiry's ``delayed`` made ``failed`` and, for the fallback's
    rows and for a temporary status the report gave no Action for, a warning's ``failed`` made
    ``delayed``."""
    warning: bool | None = None
    settled = []
    for b in bounces:
        if (
            (b.reason == "expired" and b.action == "delayed")
            or (decoder == "fallback" and b.action == "failed")
            or (not b.action and b.status[:1] == "4")
        ):
            if warning is None:
                warning = is_delay_warning(raw)
            b = dataclasses.replace(b, action="delayed" if warning else "failed")
        settled.append(b)
    return settled
