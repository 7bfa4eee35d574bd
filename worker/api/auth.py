"""Who is calling: API keys from the store (cached briefly) and the Failed Sends page's session.

The page signs in with an API key once (a form, no JavaScript) and then carries a signed cookie
naming the key by id — never the key itself. Every request re-checks that the key is still
active, so revoking a key ends its page sessions too (within the cache's few seconds).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable

from worker.api import Caller
from worker.store import Store
from worker.store.apikeys import KEY_PREFIX, KeyInfo, find_key, get_key, key_hash

SESSION_COOKIE = "md_session"
SESSION_TTL = 12 * 3600
CACHE_SECONDS = 10.0  # how long a revoked key may still work in a running API process
_CACHE_MAX = 10_000


class StoredKeys:
    """The :class:`~worker.api.KeyChecker` over the ``api_keys`` table, cached per process."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store
        self._cache: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> Caller | None:
        """The caller of an active key (its use is noted at most once per cache period)."""
        if not key.startswith(KEY_PREFIX) or len(key) > 100:
            return None
        return self._cached(key_hash(key), lambda s: find_key(s, key))

    def by_id(self, key_id: int) -> Caller | None:
        """The caller of an active key by id (a page session)."""
        return self._cached(f"id:{key_id}", lambda s: get_key(s, key_id))

    def _cached(self, slot: str, load: Callable[..., KeyInfo | None]) -> Caller | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(slot)
        if hit and hit[0] > now:
            return hit[1]
        with self._store().session() as session:
            info = load(session)
        with self._lock:
            if info is None:
                self._cache.pop(slot, None)
                return None
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            caller = Caller(key_id=info.id, name=info.name, scopes=info.scopes, owner=info.owner)
            self._cache[slot] = (now + CACHE_SECONDS, caller)
            return caller


class Sessions:
    """Signed page sessions (``key_id.expiry.signature``) and their CSRF tokens."""

    def __init__(self, secret: str) -> None:
        # a key of its own, derived from the secret key: a session cookie signs nothing else
        self._key = hmac.new(secret.encode(), b"maildispatch web session", hashlib.sha256).digest()

    def issue(self, key_id: int, now: float | None = None) -> str:
        """A cookie value for a signed-in key."""
        expires = int((now or time.time()) + SESSION_TTL)
        payload = f"{key_id}.{expires}"
        return f"{payload}.{self._sign(payload)}"

    def key_id(self, value: str | None, now: float | None = None) -> int | None:
        """The key id of a valid, unexpired cookie value."""
        parts = (value or "").split(".")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        if not hmac.compare_digest(parts[2], self._sign(f"{parts[0]}.{parts[1]}")):
            return None
        if int(parts[1]) < (now or time.time()):
            return None
        return int(parts[0])

    def csrf(self, value: str) -> str:
        """The CSRF token that the page's forms carry, bound to the session."""
        return self._sign(f"csrf:{value}")

    def csrf_ok(self, value: str | None, token: str | None) -> bool:
        """Does ``token`` belong to the session ``value``?"""
        return bool(value and token) and hmac.compare_digest(self.csrf(value or ""), token or "")

    def _sign(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
