"""Signed tokens for links that carry their own authority (unsubscribe, identity confirmation).

A token is ``base64url(payload) "." base64url(mac)``: the payload is the parts joined by a unit
separator, the MAC the first 16 bytes of HMAC-SHA256 under the deployment's secret key over a
context naming what the token is for (a token of one kind is never another's) and the payload.
It is checked with a constant-time comparison under the current and the previous keys, and has
one spelling only (base64's unused low bits must be zero).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

_SEP = "\x1f"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: str, context: bytes, payload: bytes) -> bytes:
    return hmac.new(key.encode(), context + payload, hashlib.sha256).digest()[:16]


def make(key: str, context: bytes, *parts: str) -> str:
    """The token of ``parts`` for ``context``."""
    payload = _SEP.join(parts).encode()
    return f"{_b64(payload)}.{_b64(_mac(key, context, payload))}"


def read(token: str, keys: list[str], context: bytes, count: int) -> list[str] | None:
    """The ``count`` parts of a genuine token; None for anything else (never an exception)."""
    body, _, mac = token.strip().partition(".")
    try:
        payload, given = _unb64(body), _unb64(mac)
    except ValueError:
        return None
    if _b64(payload) != body or _b64(given) != mac:
        return None
    if not any(hmac.compare_digest(_mac(k, context, payload), given) for k in keys):
        return None
    parts = payload.decode("utf-8", "replace").split(_SEP)
    return parts if len(parts) == count else None
