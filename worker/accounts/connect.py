"""Connecting an account through the provider's consent page, for products: the OAuth 2.0
authorization code flow (RFC 6749 §4.1) with PKCE (RFC 7636, S256).

1. :func:`start` (``POST /v1/accounts/{gmail|microsoft}/authorize``) keeps a random ``state``
   in Redis for 10 minutes with the owner, where to send the user back, and the PKCE verifier,
   and answers the provider's authorization URL (``MAILDISPATCH_<PROVIDER>_AUTHORIZE_URI``) with
   the state and the verifier's S256 challenge. The redirect URI is
   ``{MAILDISPATCH_PUBLIC_URL}/v1/oauth/callback``, registered with the deployment's OAuth client
   (``MAILDISPATCH_<PROVIDER>_CLIENT_ID`` / ``_SECRET``).
2. :func:`finish` (``GET /v1/oauth/callback?code=&state=``) takes the state once (a state is
   single-use; an unknown or expired one is refused before anything is sent anywhere), exchanges
   the code with the verifier at the token endpoint, reads the mailbox's address from the ID
   token (received straight from the token endpoint over TLS, which OpenID Connect Core §3.1.3.7
   accepts in place of checking its signature) and stores the grant: ``gmail`` as the owner's
   Gmail account, ``microsoft`` as their custom SMTP server with XOAUTH2 on Exchange Online.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import redis
import requests
from google.auth import jwt
from sqlalchemy.orm import Session

from config import keys
from config.errors import MaildispatchError
from config.settings import Settings
from worker.accounts.connected import GMAIL, SMTP
from worker.accounts.manage import OAuthLogin, connect_gmail, set_smtp
from worker.accounts.oauth import PROVIDERS
from worker.accounts.vault import Vault

STATE_TTL = 600
CALLBACK_PATH = "/v1/oauth/callback"


class ConnectError(MaildispatchError, ValueError):
    """A connection that cannot start or finish; the message says why."""

    exit_code = 2
    http_status = 422


@dataclass(frozen=True)
class Flow:
    """What a kind of connection asks the provider for, and which account it becomes."""

    kind: str  # "gmail" | "microsoft"
    provider: str
    channel: str
    scopes: tuple[str, ...]
    extra: tuple[tuple[str, str], ...]  # further authorization parameters


FLOWS = {
    "gmail": Flow(
        "gmail",
        "google",
        GMAIL,
        ("openid", "email", "https://www.googleapis.com/auth/gmail.send"),
        # a refresh token every time, not only at the first consent
        (("access_type", "offline"), ("prompt", "consent")),
    ),
    "microsoft": Flow(
        "microsoft",
        "microsoft",
        SMTP,
        ("openid", "email", *PROVIDERS["microsoft"].smtp_scopes),
        (("response_mode", "query"), ("prompt", "select_account")),
    ),
}


@dataclass(frozen=True)
class Connected:
    """What :func:`finish` stored."""

    owner: str
    kind: str
    channel: str
    address: str
    return_to: str | None


def callback_url(settings: Settings) -> str:
    """Where the provider sends the user back (registered with the OAuth client)."""
    if not settings.public_url:
        raise ConnectError(
            "set MAILDISPATCH_PUBLIC_URL (the API's public address): the provider sends the "
            f"user back to {{it}}{CALLBACK_PATH}"
        )
    return settings.public_url.rstrip("/") + CALLBACK_PATH


def _client(settings: Settings, provider: str) -> tuple[str, str]:
    found = PROVIDERS[provider].deployment_client(settings)
    if found is None:
        known = PROVIDERS[provider]
        raise ConnectError(f"no OAuth client for {known.label}: set {known.client_settings()}")
    return found


def check_return_to(url: str | None) -> str | None:
    """An absolute http(s) URL (the product's page), or None."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000:
        raise ConnectError("return_to must be an absolute http(s) URL")
    return url


def start(
    client: redis.Redis,
    settings: Settings,
    kind: str,
    owner: str,
    return_to: str | None,
    email: str | None = None,
) -> str:
    """The provider's authorization URL for an owner's new connection (state kept 10 min).

    ``email``, when the product knows the mailbox, is the provider's ``login_hint``, and the
    address used if the token endpoint answers no ID token.
    """
    flow = FLOWS.get(kind)
    if flow is None:
        raise ConnectError(f"kind must be one of {', '.join(FLOWS)}")
    owner = owner.strip()
    if not owner or len(owner) > 200:
        raise ConnectError("owner must be 1 to 200 characters")
    provider = PROVIDERS[flow.provider]
    client_id, _ = _client(settings, provider.name)
    redirect_uri = callback_url(settings)
    state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    kept = {
        "kind": kind,
        "owner": owner,
        "return_to": check_return_to(return_to),
        "verifier": verifier,
        "redirect_uri": redirect_uri,
        "email": email.strip() if email else None,
    }
    client.set(keys.oauth_state(state), json.dumps(kept), ex=STATE_TTL)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {
        "client_id": client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": " ".join(flow.scopes),
        "state": state,
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
        **dict(flow.extra),
    }
    if kept["email"]:
        query["login_hint"] = kept["email"]
    return f"{provider.authorize_uri(settings)}?{urlencode(query)}"


def take_state(client: redis.Redis, state: str) -> dict[str, Any]:
    """The flow a state started, once; ConnectError when unknown, used or expired."""
    raw = client.getdel(keys.oauth_state(state)) if state else None
    if raw is None:
        raise ConnectError("unknown or expired state: start the connection again")
    kept: dict[str, Any] = json.loads(raw)
    return kept


def finish(
    session: Session, vault: Vault, settings: Settings, kept: dict[str, Any], code: str
) -> Connected:
    """Exchange the code of a taken state and store the grant as the owner's account."""
    flow = FLOWS[kept["kind"]]
    provider = PROVIDERS[flow.provider]
    client_id, client_secret = _client(settings, provider.name)
    try:
        answer = requests.post(
            provider.token_uri(settings),
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": kept["redirect_uri"],
                "client_id": client_id,
                "client_secret": client_secret,
                "code_verifier": kept["verifier"],
            },
            headers={"Accept": "application/json"},
            timeout=30,
        )
        body = answer.json()
    except (requests.RequestException, ValueError) as exc:
        raise ConnectError(f"{provider.label}'s token endpoint failed: {exc}") from None
    if answer.status_code != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        raise ConnectError(f"{provider.label} refused the authorization code ({error})")
    refresh_token, id_token = body.get("refresh_token"), body.get("id_token")
    if not refresh_token:
        raise ConnectError(f"{provider.label} gave no refresh token (offline access refused)")
    address = _address(id_token) if id_token else None
    if address is None and flow.channel == GMAIL:
        address = _gmail_profile(settings, str(body.get("access_token") or ""))
    address = address or kept.get("email")
    if not address:
        raise ConnectError("the provider did not say which mailbox was connected (no ID token)")
    owner = kept["owner"]
    if flow.channel == GMAIL:
        connect_gmail(session, vault, owner=owner, email=address, refresh_token=refresh_token)
    else:
        set_smtp(
            session,
            vault,
            settings=settings,
            owner=owner,
            username=address,
            oauth=OAuthLogin(provider.name, refresh_token),
        )
    return Connected(owner, flow.kind, flow.channel, address, kept.get("return_to"))


def _address(id_token: Any) -> str | None:
    """The mailbox's address from the ID token's claims (``email``, else Microsoft's UPN)."""
    try:
        claims = jwt.decode(str(id_token), verify=False)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError):
        raise ConnectError("the provider's answer has no usable ID token") from None
    address = claims.get("email") or claims.get("preferred_username")
    return address if isinstance(address, str) and "@" in address else None


def _gmail_profile(settings: Settings, access_token: str) -> str | None:
    """The connected address from the Gmail API (``users.getProfile``), when the token
    endpoint gave no ID token."""
    if not access_token:
        return None
    try:
        answer = requests.get(
            settings.gmail_api_url.rstrip("/") + "/gmail/v1/users/me/profile",
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=30,
        )
        address = answer.json().get("emailAddress") if answer.status_code == 200 else None
    except (requests.RequestException, ValueError, AttributeError):
        return None
    return address if isinstance(address, str) and "@" in address else None
