"""The kinds of Failed Send (DESIGN §7): why a recipient's message did not arrive."""

from __future__ import annotations

from enum import StrEnum


class FailedKind(StrEnum):
    """What ended a recipient's delivery; stored in ``failed_sends.kind``, shown to users."""

    #: the server refused it at send time (SMTP 5xx, a Gmail API refusal)
    REJECTED = "rejected"
    #: accepted, then bounced back (MSC, through its return path)
    BOUNCED = "bounced"
    #: retried until the channel's policy gave up, or its state was lost
    EXPIRED = "expired"
    #: the owner's account refused the login or its grant was revoked
    AUTH = "auth"
    #: the deployment or the owner's account is not set up to send it
    CONFIG = "config"
    #: the address is on the suppression list
    SUPPRESSED = "suppressed"
    #: the recipient reported it as spam (a feedback report)
    COMPLAINT = "complaint"
    #: a bug in maildispatch itself (logged with its traceback)
    ERROR = "error"


#: every kind, in the order above (the API, the page and /metrics list them so)
FAILED_KINDS: tuple[str, ...] = tuple(kind.value for kind in FailedKind)
