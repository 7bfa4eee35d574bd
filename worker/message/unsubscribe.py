"""One-click unsubscribe (RFC 8058, RFC 2369): the token in a message's List-Unsubscribe links.

A job with ``unsubscribe: true`` (one recipient) gets

    List-Unsubscribe: <{MAILDISPATCH_PUBLIC_URL}/u/TOKEN>, <mailto:u@BOUNCE_DOMAIN?subject=unsubscribe%20TOKEN>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

The token carries the job, the owner and the recipient (base64url) and an HMAC-SHA256 of them
under the deployment's secret key, so it still works when the job's state is long gone, names
exactly one person of one owner, and cannot be made for another address. It is checked with
a constant-time comparison, under the current and the previous keys (a key rotation does not
break the links of mail already sent). Without a public URL the header has the mailto form
only, and no List-Unsubscribe-Post (RFC 8058 one-click needs an HTTPS URI).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from config.settings import Settings
from producers.job import SendJob
from worker.message import tokens

#: what the MAC is over, before the token's payload: a MAC for nothing else
_CONTEXT = b"maildispatch-unsubscribe\x00"
#: the address of the mailto form (at the bounce domain; the bounce server takes it)
MAILTO_LOCAL = "u"
ONE_CLICK = "List-Unsubscribe=One-Click"


@dataclass(frozen=True)
class Unsubscribe:
    """Who a token unsubscribes, from whose mail, and the job it came with."""

    job_id: str
    owner: str
    recipient: str


def make_token(key: str, job_id: str, owner: str, recipient: str) -> str:
    """The token of one recipient of one job."""
    return tokens.make(key, _CONTEXT, job_id, owner, recipient.lower())


def read_token(token: str, keys: list[str]) -> Unsubscribe | None:
    """What a genuine token says; None for anything else (never an exception)."""
    parts = tokens.read(token, keys, _CONTEXT, 3)
    return Unsubscribe(*parts) if parts else None


def headers(token: str, public_url: str | None, bounce_domain: str) -> list[tuple[str, str]]:
    """The List-Unsubscribe header(s) of a message (see the module's docstring)."""
    mailto = f"<mailto:{mailto_address(bounce_domain)}?subject={quote('unsubscribe ' + token)}>"
    if not public_url:
        return [("List-Unsubscribe", mailto)]
    url = f"<{public_url.rstrip('/')}/u/{token}>"
    return [("List-Unsubscribe", f"{url}, {mailto}"), ("List-Unsubscribe-Post", ONE_CLICK)]


def job_headers(job: SendJob, settings: Settings) -> list[tuple[str, str]]:
    """The List-Unsubscribe headers of a job that asks for them (none otherwise)."""
    if not job.unsubscribe:
        return []
    token = make_token(settings.require_secret_key(), str(job.id), job.owner, job.recipients[0])
    return headers(token, settings.public_url, settings.bounce_domain)


def mailto_address(bounce_domain: str) -> str:
    """The address of the mailto form (the bounce server takes mail for it)."""
    return f"{MAILTO_LOCAL}@{bounce_domain}".lower()


def token_in_subject(subject: str) -> str | None:
    """The token of a mailto unsubscribe's Subject (``unsubscribe TOKEN``), if it has one."""
    words = subject.split()
    if len(words) == 2 and words[0].lower() == "unsubscribe":
        return words[1]
    return None
