"""Return-path tokens: ``b+<token>@<bounce domain>`` naming a job and one recipient, signed.

The token is base32 (case-insensitive: some MTAs lowercase local parts) of the job's 16-byte
UUID, a 6-byte tag of the recipient the message was sent to, and a 10-byte HMAC-SHA256 of both
under the secret key: a forged bounce is ignored, and a report can only touch the recipient its
return path was issued for (each recipient gets its own return path, so its own transaction).

Tokens issued before recipients were bound carry no tag (16 + 10 bytes): they still verify, as
naming the job only (see :attr:`Token.recipient_tag` and worker/bounces/intake/ingest.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "b+"
MAC_BYTES = 10
TAG_BYTES = 6


def _mac(key: str, raw: bytes) -> bytes:
    return hmac.new(key.encode(), b"return-path:" + raw, hashlib.sha256).digest()[:MAC_BYTES]


def recipient_tag(recipient: str) -> bytes:
    """The short tag naming a recipient inside a token (case-insensitive)."""
    return hashlib.sha256(b"rcpt:" + recipient.strip().lower().encode("utf-8")).digest()[:TAG_BYTES]


@dataclass(frozen=True)
class Token:
    """A verified return-path token."""

    job_id: uuid.UUID
    #: None for a token issued before return paths were bound to a recipient (job only)
    recipient_tag: bytes | None

    def names(self, recipient: str) -> bool:
        """Was this return path issued for ``recipient``?"""
        return self.recipient_tag is not None and hmac.compare_digest(
            self.recipient_tag, recipient_tag(recipient)
        )


def make_token(job_id: uuid.UUID, key: str, recipient: str | None = None) -> str:
    """The signed token for a job's recipient (without ``recipient``: the old, job-only form)."""
    raw = job_id.bytes + (recipient_tag(recipient) if recipient is not None else b"")
    return base64.b32encode(raw + _mac(key, raw)).decode().rstrip("=").lower()


def return_path(
    job_id: uuid.UUID, key: str, bounce_domain: str, recipient: str | None = None
) -> str:
    """The envelope sender for an MSC message of this job to ``recipient``."""
    return f"{PREFIX}{make_token(job_id, key, recipient)}@{bounce_domain}"


def parse_token(token: str, keys: Iterable[str]) -> Token | None:
    """The token if it was signed by one of ``keys`` (current first), else None."""
    text = token.strip().upper()
    if len(text) > 64:  # a local part is at most 64 octets (RFC 5321 4.5.3.1.1)
        return None
    try:
        data = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return None
    if base64.b32encode(data).decode().rstrip("=") != text:
        return None  # one spelling per token (any case): base32's unused low bits must be zero
    if len(data) not in (16 + MAC_BYTES, 16 + TAG_BYTES + MAC_BYTES):
        return None
    raw, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
    if any(hmac.compare_digest(mac, _mac(k, raw)) for k in keys):
        return Token(uuid.UUID(bytes=raw[:16]), raw[16:] or None)
    return None


def verify_token(token: str, keys: Iterable[str]) -> uuid.UUID | None:
    """The job id if the token was signed by one of ``keys`` (current first), else None."""
    parsed = parse_token(token, keys)
    return parsed.job_id if parsed else None


def is_return_domain(domain: str, bounce_domain: str, label: str | None = None) -> bool:
    """Is this a domain our return paths use: the bounce domain, or (given the label) a
    verified sending domain's ``<label>.<domain>``, a CNAME to it (worker/domains/)?"""
    domain = domain.lower().rstrip(".")
    if domain == bounce_domain.lower():
        return True
    return label is not None and domain.startswith(f"{label}.") and domain.count(".") >= 2


def token_from_address(
    address: str, keys: Iterable[str], bounce_domain: str, label: str | None = None
) -> Token | None:
    """The token of a return-path address at a return domain (:func:`is_return_domain`), if
    genuine: its HMAC is what proves it ours, whichever of our domains it is at."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    if not is_return_domain(domain, bounce_domain, label) or not local.lower().startswith(PREFIX):
        return None
    return parse_token(local[len(PREFIX) :], keys)


def job_from_address(address: str, keys: Iterable[str], bounce_domain: str) -> uuid.UUID | None:
    """The job id named by a return-path address at the bounce domain, if genuine."""
    parsed = token_from_address(address, keys, bounce_domain)
    return parsed.job_id if parsed else None
