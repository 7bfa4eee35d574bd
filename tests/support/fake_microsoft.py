"""A small real HTTP server speaking Microsoft identity platform's v2.0 token endpoint.

Like Google's fake (tests/support/fake_google.py) it is a service the tests cannot reach for
real; the worker finds it only through ``MAILDISPATCH_MICROSOFT_TOKEN_URI``.

``GET /common/oauth2/v2.0/authorize`` is the consent page of the deployment's app
(``app_id``): the user in ``codes.user`` agrees at once, and the browser is sent back with a
code (tests/support/oauth_codes.py checks the PKCE challenge, the client, the redirect URI).
``POST .../token`` with ``grant_type=authorization_code`` redeems it: a grant, an access token
and an ID token whose ``preferred_username`` is the mailbox (no ``email`` claim, as for many
work accounts).

``POST /common/oauth2/v2.0/token`` with ``grant_type=refresh_token``:

- the client must match the grant's (else ``401 invalid_client``, AADSTS7000215), the ``scope``
  must ask for ``https://outlook.office.com/SMTP.Send`` (else ``400 invalid_scope``);
- a good refresh token gets an access token valid ``expires_in`` seconds **and a new refresh
  token**: Microsoft replaces refresh tokens on every use. This fake is stricter than Microsoft
  (whose old token lives until its own expiry): a used refresh token is refused at once, so a
  client that does not keep the new one is caught;
- a revoked, used or unknown one gets ``400 invalid_grant``.

:meth:`FakeMicrosoft.holder` tells the SMTP server whose an access token is (None when unknown,
expired or revoked), as Exchange Online checks the bearer token of ``AUTH XOAUTH2``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.httpfake import HttpFake
from tests.support.oauth_codes import CodeIssuer, id_token

TOKEN_PATH = "/common/oauth2/v2.0/token"
AUTHORIZE_PATH = "/common/oauth2/v2.0/authorize"
SMTP_SCOPE = "https://outlook.office.com/SMTP.Send"
APP_ID, APP_SECRET = "app-1f2e3d", "app-secret-value"


@dataclass
class MsGrant:
    """A user's consent: whose it is, for which client, and the refresh token in force."""

    email: str
    client_id: str
    client_secret: str
    refresh_token: str
    revoked: bool = False


@dataclass
class TokenRequest:
    """One request the endpoint answered: its outcome and the scope asked for."""

    outcome: str  # "ok" / "invalid_grant" / "invalid_client" / "invalid_scope" ...
    scope: str = ""
    client_id: str = ""


@dataclass
class FakeMicrosoft(HttpFake):
    """The server; thread-safe; :meth:`reset` between tests."""

    expires_in: int = 3600
    grants: list[MsGrant] = field(default_factory=list)
    tokens: dict[str, tuple[MsGrant, float]] = field(default_factory=dict)  # access -> grant
    requests: list[TokenRequest] = field(default_factory=list)
    id_tokens: bool = True  # False: the code exchange answers no ID token (no openid scope)

    def __post_init__(self) -> None:
        self.codes = CodeIssuer(APP_ID, (SMTP_SCOPE, "offline_access"))
        self.lock = threading.Lock()
        self._serve(_handler(self))

    @property
    def token_uri(self) -> str:
        """The token endpoint (``MAILDISPATCH_MICROSOFT_TOKEN_URI``)."""
        return f"{self.url}{TOKEN_PATH}"

    @property
    def authorize_uri(self) -> str:
        """The consent page (``MAILDISPATCH_MICROSOFT_AUTHORIZE_URI``)."""
        return f"{self.url}{AUTHORIZE_PATH}"

    def reset(self) -> None:
        """Forget grants, tokens and requests."""
        with self.lock:
            self.grants.clear()
            self.tokens.clear()
            self.requests.clear()
            self.expires_in = 3600
            self.id_tokens = True
            self.codes = CodeIssuer(APP_ID, (SMTP_SCOPE, "offline_access"))

    def grant(self, email_address: str, client_id: str, client_secret: str) -> str:
        """A user consents: the refresh token the authorization code flow would return."""
        with self.lock:
            token = _refresh_token()
            self.grants.append(MsGrant(email_address, client_id, client_secret, token))
        return token

    def current_refresh_token(self, email_address: str) -> str:
        """The refresh token that works now for a user (after any rotations)."""
        with self.lock:
            return next(g.refresh_token for g in self.grants if g.email == email_address)

    def revoke(self, email_address: str) -> None:
        """The user (or an admin) revoked the consent: refreshes fail, access tokens stop."""
        with self.lock:
            for grant in self.grants:
                if grant.email == email_address:
                    grant.revoked = True
            self.tokens = {a: t for a, t in self.tokens.items() if t[0].email != email_address}

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is now refused (its refresh token still works)."""
        with self.lock:
            self.tokens.clear()

    def holder(self, access_token: str) -> str | None:
        """Whose valid access token this is."""
        with self.lock:
            grant, expires = self.tokens.get(access_token, (None, 0.0))
            if grant is None or grant.revoked or expires < time.time():
                return None
            return grant.email

    def outcomes(self) -> list[str]:
        """What each token request got, in order."""
        with self.lock:
            return [r.outcome for r in self.requests]

    # -- request handling (server threads) --------------------------------------------------------
    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        scope, client_id = form.get("scope", ""), form.get("client_id", "")
        with self.lock:
            status, body = self._answer(form, scope)
            self.requests.append(TokenRequest(body.get("error", "ok"), scope, client_id))
        return status, body

    def _answer(self, form: dict[str, str], scope: str) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") == "authorization_code":
            user = self.codes.redeem(form, APP_SECRET)
            if user is None:
                return _error(
                    400, "invalid_grant", "AADSTS501481: The Code_Verifier does not match."
                )
            grant = MsGrant(user, APP_ID, APP_SECRET, _refresh_token())
            self.grants.append(grant)
            status, body = self._tokens(grant)
            if not self.id_tokens:
                return status, body
            return status, body | {"id_token": id_token({"preferred_username": user})}
        if form.get("grant_type") != "refresh_token":
            return _error(400, "unsupported_grant_type", "AADSTS70003: unsupported grant type")
        grant = next((g for g in self.grants if g.refresh_token == form.get("refresh_token")), None)
        if grant is not None and (form.get("client_id"), form.get("client_secret")) != (
            grant.client_id,
            grant.client_secret,
        ):
            return _error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        if grant is None or grant.revoked:
            return _error(
                400,
                "invalid_grant",
                "AADSTS50173: The provided grant has expired due to it being revoked.",
            )
        if SMTP_SCOPE not in scope.split():
            return _error(400, "invalid_scope", "AADSTS70011: The provided scope is not valid.")
        grant.refresh_token = _refresh_token()  # the old one is used up
        return self._tokens(grant)

    def _tokens(self, grant: MsGrant) -> tuple[int, dict[str, Any]]:
        access = f"eyJ0eXAi.fake-{secrets.token_urlsafe(24)}"
        self.tokens[access] = (grant, time.time() + self.expires_in)
        return 200, {
            "token_type": "Bearer",
            "scope": f"{SMTP_SCOPE} https://outlook.office.com/.default",
            "expires_in": self.expires_in,
            "ext_expires_in": self.expires_in,
            "access_token": access,
            "refresh_token": grant.refresh_token,
        }


def _refresh_token() -> str:
    return f"M.C5_BAY.fake-{secrets.token_urlsafe(32)}"


def _error(status: int, error: str, description: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": error, "error_description": description, "error_codes": [0]}


def _handler(fake: FakeMicrosoft) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            status, where = (
                fake.codes.consent(query) if parts.path == AUTHORIZE_PATH else (404, "not found")
            )
            self.send_response(status)
            if status == 302:
                self.send_header("Location", where)
            data = b"" if status == 302 else where.encode()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            status, body = (
                fake._token(form)
                if self.path == TOKEN_PATH
                else (404, {"error": "not_found", "error_description": self.path})
            )
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
