"""Return-path tokens: ``b+<token>@<bounce domain>`` naming the job, signed with HMAC.

The token is base32 (case-insensitive: some MTAs lowercase local parts) of the job's 16-byte
UUID followed by a 10-byte HMAC-SHA256 under the secret key, so a forged bounce is ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Iterable

PREFIX = "b+"
MAC_BYTES = 10


def _mac(key: str, raw: bytes) -> bytes:
    return hmac.new(key.encode(), b"return-path:" + raw, hashlib.sha256).digest()[:MAC_BYTES]


def make_token(job_id: uuid.UUID, key: str) -> str:
    """The signed token for a job."""
    raw = job_id.bytes
    return base64.b32encode(raw + _mac(key, raw)).decode().rstrip("=").lower()


def return_path(job_id: uuid.UUID, key: str, bounce_domain: str) -> str:
    """The envelope sender for an MSC message of this job."""
    return f"{PREFIX}{make_token(job_id, key)}@{bounce_domain}"


def verify_token(token: str, keys: Iterable[str]) -> uuid.UUID | None:
    """The job id if the token was signed by one of ``keys`` (current first), else None."""
    text = token.strip().upper()
    text += "=" * (-len(text) % 8)
    try:
        data = base64.b32decode(text)
    except (binascii.Error, ValueError):
        return None
    if len(data) != 16 + MAC_BYTES:
        return None
    raw, mac = data[:16], data[16:]
    if any(hmac.compare_digest(mac, _mac(k, raw)) for k in keys):
        return uuid.UUID(bytes=raw)
    return None


def job_from_address(address: str, keys: Iterable[str], bounce_domain: str) -> uuid.UUID | None:
    """The job id named by a return-path address at the bounce domain, if genuine."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    if domain.lower() != bounce_domain.lower() or not local.lower().startswith(PREFIX):
        return None
    return verify_token(local[len(PREFIX) :], keys)
