"""OAuth 2.0 access tokens for sending as a user: Google (the Gmail API, Gmail's SMTP) and
Microsoft 365 (Exchange Online's SMTP with ``AUTH XOAUTH2``).

One mechanism for every provider: the refresh-token grant of RFC 6749 §6, through google-auth's
user ``Credentials`` pointed at the provider's token endpoint (``MAILDISPATCH_GOOGLE_TOKEN_URI``,
``MAILDISPATCH_MICROSOFT_TOKEN_URI``). Why not MSAL for Microsoft: docs/decisions.md.

An access token is cached per account in this worker process and refreshed shortly before it
expires (google-auth's early-refresh margin) or when the server refuses it; one caller refreshes
at a time and the others wait for its token. Microsoft replaces the refresh token on every use
(the old one lives at most 90 days from its issue): a new one is handed to ``rotated``, which
stores it encrypted, so that an account in steady use never expires.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import google.auth.exceptions
import requests
import structlog
from google.auth.credentials import TokenState
from google.auth.transport.requests import Request
from google.oauth2.credentials import Credentials

from config.settings import Settings
from worker.errors import DeliveryError, PermanentError, TransientError
from worker.failures.kinds import FailedKind

log = structlog.get_logger("maildispatch.oauth")

#: a token fetched this recently is used even inside google-auth's early-refresh margin
JUST_REFRESHED = 30.0
MAX_CACHED_ACCOUNTS = 1024


@dataclass(frozen=True)
class Provider:
    """An OAuth provider whose accounts send through SMTP with XOAUTH2."""

    name: str  # the settings' prefix: MAILDISPATCH_<NAME>_TOKEN_URI, _CLIENT_ID ...
    label: str
    smtp_scopes: tuple[str, ...]  # asked for when connecting, and on every refresh

    def smtp_server(self, settings: Settings) -> tuple[str, int]:
        """``MAILDISPATCH_<NAME>_SMTP_SERVER`` (``host:port``, STARTTLS)."""
        host, _, port = str(getattr(settings, f"{self.name}_smtp_server")).rpartition(":")
        return host, int(port)

    def token_uri(self, settings: Settings) -> str:
        """``MAILDISPATCH_<NAME>_TOKEN_URI``."""
        return str(getattr(settings, f"{self.name}_token_uri"))

    def authorize_uri(self, settings: Settings) -> str:
        """``MAILDISPATCH_<NAME>_AUTHORIZE_URI``."""
        return str(getattr(settings, f"{self.name}_authorize_uri"))

    def deployment_client(self, settings: Settings) -> tuple[str, str] | None:
        """The deployment's OAuth client (``MAILDISPATCH_<NAME>_CLIENT_ID`` / ``_SECRET``)."""
        client_id = getattr(settings, f"{self.name}_client_id")
        secret = getattr(settings, f"{self.name}_client_secret")
        if not client_id or not secret:
            return None
        return str(client_id), str(secret.get_secret_value())

    def client_settings(self) -> str:
        """The settings that name the deployment's client, for error texts."""
        name = self.name.upper()
        return f"MAILDISPATCH_{name}_CLIENT_ID and MAILDISPATCH_{name}_CLIENT_SECRET"


PROVIDERS = {
    "microsoft": Provider(
        "microsoft", "Microsoft", ("https://outlook.office.com/SMTP.Send", "offline_access")
    ),
    "google": Provider("google", "Google", ("https://mail.google.com/",)),
}


@dataclass(frozen=True)
class Grant:
    """What refreshes an account's access token (secrets never in its repr)."""

    provider: str  # "google" | "microsoft"
    token_uri: str
    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)
    scopes: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        """A digest of the credentials: the same account with other credentials is another."""
        text = f"{self.token_uri}\0{self.client_id}\0{self.client_secret}\0{self.refresh_token}"
        return hashlib.sha256(text.encode()).hexdigest()


#: (owner, the account's revision, the refresh token that replaced the stored one)
Rotated = Callable[[str, int, str], Awaitable[None]]


class AccessToken:
    """One account's access token in this process; refreshed by one caller at a time."""

    def __init__(
        self, grant: Grant, what: str | None, owner: str, revision: int, rotated: Rotated | None
    ) -> None:
        self.credentials = Credentials(  # type: ignore[no-untyped-call]
            token=None,
            refresh_token=grant.refresh_token,
            token_uri=grant.token_uri,
            client_id=grant.client_id,
            client_secret=grant.client_secret,
            scopes=list(grant.scopes) or None,
        )
        known = PROVIDERS.get(grant.provider)
        self.by = known.label if known else grant.provider
        self.what = what or f"{self.by} account"
        self.owner, self.revision = owner, revision
        self.refresh_token = grant.refresh_token
        self._rotated = rotated
        self._session = requests.Session()
        self._request = Request(self._session)
        self._refreshing = asyncio.Lock()  # coroutines of this loop
        self._thread_lock = threading.Lock()  # the refresh itself runs in a thread
        self._fetched_at = 0.0
        self._rejected: str | None = None
        self.last_given: str | None = None
        self.on_new_refresh_token: Callable[[str], None] | None = None

    def _usable(self) -> bool:
        c = self.credentials
        if not c.token or c.token == self._rejected:
            return False
        if c.token_state == TokenState.FRESH:
            return True
        recent = time.monotonic() - self._fetched_at < JUST_REFRESHED
        return recent and c.token_state != TokenState.INVALID

    async def get(self) -> str:
        """A valid access token, refreshed first when it expires soon or was :meth:`reject`-ed.

        A refresh the provider refuses raises PermanentError (``auth``: the user must connect
        again; ``config``: the OAuth client is wrong); an unreachable endpoint TransientError.
        """
        async with self._refreshing:
            if not self._usable():
                token = self.credentials.token
                why = (
                    "rejected"
                    if token and token == self._rejected
                    else "expired"
                    if token
                    else "first"
                )
                try:
                    await asyncio.to_thread(self._refresh)
                except google.auth.exceptions.RefreshError as exc:
                    raise refresh_error(exc, self.what, self.by) from exc
                except google.auth.exceptions.TransportError as exc:
                    raise TransientError(f"cannot reach {self.by}'s token endpoint: {exc}") from exc
                expiry = self.credentials.expiry
                log.info(
                    "oauth_token_refreshed",
                    why=why,
                    expires_in_s=round(
                        (expiry.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
                    )
                    if expiry
                    else None,
                )
                await self._keep_refresh_token()
            self.last_given = str(self.credentials.token)
            return self.last_given

    def reject(self, token: str | None) -> None:
        """The server refused this access token: the next :meth:`get` fetches another."""
        self._rejected = token

    async def _keep_refresh_token(self) -> None:
        new = self.credentials.refresh_token
        if not new or new == self.refresh_token:
            return
        self.refresh_token = new
        if self.on_new_refresh_token is not None:
            self.on_new_refresh_token(new)
        if self._rotated is not None:
            try:
                await self._rotated(self.owner, self.revision, new)
            except Exception as exc:  # the token still works in this process; say so
                log.warning("oauth_refresh_token_not_stored", error=type(exc).__name__)

    def _refresh(self) -> None:
        with self._thread_lock:
            self.credentials.refresh(self._request)  # type: ignore[no-untyped-call]
            self._fetched_at = time.monotonic()

    def close(self) -> None:
        """Close the token endpoint's connections."""
        self._session.close()


class AccessTokens:
    """The access tokens of the accounts this process sends for (least recently used dropped)."""

    def __init__(self, what: str | None = None, rotated: Rotated | None = None) -> None:
        """``what`` names the account in errors (default: "<provider> account")."""
        self.what = what
        self.rotated = rotated
        self._tokens: OrderedDict[tuple[str, int, str], AccessToken] = OrderedDict()

    def get(self, owner: str, revision: int, grant: Grant) -> AccessToken:
        """The account's token holder, made on first use."""
        key = (owner, revision, grant.fingerprint())
        token = self._tokens.get(key)
        if token is None:
            token = self._tokens[key] = AccessToken(grant, self.what, owner, revision, self.rotated)

            def also_known_as(refresh_token: str, token: AccessToken = token) -> None:
                # the stored account will carry the new refresh token: the same holder serves it
                alias = (
                    owner,
                    revision,
                    dataclasses.replace(grant, refresh_token=refresh_token).fingerprint(),
                )
                self._tokens[alias] = token

            token.on_new_refresh_token = also_known_as
            while len(self._tokens) > MAX_CACHED_ACCOUNTS:
                self._tokens.popitem(last=False)[1].close()
        self._tokens.move_to_end(key)
        return token

    def close(self) -> None:
        """Close every token endpoint session."""
        for token in self._tokens.values():
            token.close()
        self._tokens.clear()


def refresh_error(
    exc: google.auth.exceptions.RefreshError, what: str, by: str = "the provider"
) -> DeliveryError:
    """A refused refresh as our error: ``invalid_grant`` means the user must connect again.

    ``what`` names the account ("Gmail account"), ``by`` the provider ("Google").
    """
    data = next((a for a in exc.args if isinstance(a, dict)), {})
    first = str(exc.args[0]) if exc.args else ""
    if getattr(exc, "retryable", False) or not isinstance(data.get("error"), str):
        # no OAuth error in a JSON body (RFC 6749 §5.2): a 502 from a proxy, a page of HTML, a
        # reset connection. Nothing says the grant is gone: the account stays connected
        text = " ".join(first.split())[:200]
        return TransientError(f"{by}'s token endpoint failed: {text or type(exc).__name__}")
    error = str(data["error"]).strip()[:100]
    description = str(data.get("error_description") or "").strip()[:300]
    detail = f"{error}: {description}" if description else error
    if error == "invalid_grant":
        return PermanentError(
            f"reconnect the {what}: {by} no longer accepts its authorization ({detail})",
            kind=FailedKind.AUTH,
        )
    if error in ("invalid_client", "unauthorized_client"):
        return PermanentError(
            f"{by} refused the OAuth client ({detail}); check the client id and secret",
            kind=FailedKind.CONFIG,
        )
    return PermanentError(
        f"{by}'s token endpoint refused the refresh: {detail}", kind=FailedKind.AUTH
    )
