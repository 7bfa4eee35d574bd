"""Challenge/response and sender-allowlist notices: not failures, whatever wraps them.

Services such as Boxbe answer a message with "add yourself to my guest list" or "verify you are
a human before your message is delivered", sometimes inside a ``multipart/report`` with
``Action: failed``. The recipient exists and may still read the message: a failure row would
suppress a real person on MSC. A notice whose own text (before the delivery-status part or the
returned original) reads as one of these gives no failure: in doubt between a challenge and a
rejection, nobody is suppressed. A server that answers "550 Your server requires confirmation.
Visit <link> to confirm this mail server" asks the same of the sending server: a challenge too.
An SMTP rejection that only mentions an allowlist ("550 ... not on the whitelist", "not in the
approved senders list") is not: nothing is asked of the sender, and the mail did not arrive.
"""

from __future__ import annotations

import re

from .model import Message

#: the notice asks the sender to do something before the message is let through
CHALLENGE = re.compile(
    r"(?i)guest ?list|wait-?listed|challenge[- ]response|verify (that )?you are (a )?(human|real"
    r"|not a robot)|prove (that )?you are (a )?(human|real)|add yourself to (my|the|our)"
    r"|confirm (that )?you (are a (human|real)"
    r"|sent (this|the|your) (message|e-?mail))|request to join|whitelist request"
    r"|requires? (your |sender )?confirmation|to confirm (this|your) (mail )?server"
)
#: where the notice's own text ends
_NOTICE_END = re.compile(
    r"(?im)^content-type:[ \t]*(message/delivery-status|message/rfc822|text/rfc822-headers"
    r"|message/global)|^-+ ?(original message|this is a copy|returned message)"
)
#: characters of the notice looked at
NOTICE = 5000


def is_challenge(message: Message) -> bool:
    """Does the notice ask its sender to confirm themselves (a challenge, a guest list)?"""
    payload = message.payload
    end = _NOTICE_END.search(payload)
    notice = payload[: min(end.start() if end else len(payload), NOTICE)]
    return bool(CHALLENGE.search(message.header("subject") + "\n" + notice))
