"""A small real HTTP server speaking Google's OAuth token endpoint and Gmail's send call.

It is the one service the tests cannot run for real. The worker reaches it only through
``MAILDISPATCH_GOOGLE_TOKEN_URI`` (``{url}/token``) and ``MAILDISPATCH_GMAIL_API_URL`` (``{url}``).

- ``GET /o/oauth2/v2/auth``: the consent page of the deployment's app (``APP_ID``): the user
  in ``codes.user`` agrees at once and is sent back with a code (tests/support/oauth_codes.py);
  ``POST /token`` with ``grant_type=authorization_code`` redeems it for a refresh token, an
  access token and an ID token with the ``email``.
- ``POST /token`` (``grant_type=refresh_token``): a known refresh token with the right client
  gets a new access token valid ``expires_in`` seconds; a revoked or unknown one gets
  ``400 {"error": "invalid_grant"}``, a wrong client ``401 {"error": "invalid_client"}``.
- ``POST /gmail/v1/users/me/messages/send``: checks the Bearer token (unknown or expired ->
  401), decodes ``raw`` and keeps the message, answers ``200 {"id", "threadId"}``; answers
  queued with :meth:`FakeGoogle.script` are used first, one per request.
"""

from __future__ import annotations

import base64
import binascii
import collections
import email
import email.policy
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.httpfake import HttpFake
from tests.support.oauth_codes import CodeIssuer, id_token

SEND_PATH = "/gmail/v1/users/me/messages/send"
AUTHORIZE_PATH = "/o/oauth2/v2/auth"
PROFILE_PATH = "/gmail/v1/users/me/profile"
SEND_SCOPE = "https://www.googleapis.com/auth/gmail.send"
APP_ID, APP_SECRET = "deploy-app.apps.googleusercontent.com", "GOCSPX-deploy-secret"


@dataclass
class SentMessage:
    """One message Gmail accepted."""

    account: str  # the address whose access token sent it
    raw: bytes
    gmail_id: str

    @property
    def message(self) -> EmailMessage:
        """The parsed message."""
        return email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[return-value]

    @property
    def recipients(self) -> list[str]:
        """Everyone Gmail would deliver to (To, Cc and Bcc headers)."""
        msg = self.message
        fields = [str(v) for h in ("To", "Cc", "Bcc") for v in msg.get_all(h, [])]
        return [addr for _, addr in getaddresses(fields)]


@dataclass
class Grant:
    """A refresh token Google knows: whose it is, for which client, and whether it is revoked."""

    email: str
    client_id: str
    client_secret: str
    revoked: bool = False


@dataclass
class Log:
    """What the fake saw, in order (for assertions)."""

    token_requests: list[str] = field(default_factory=list)  # "ok" / "invalid_grant" / ...
    send_requests: list[tuple[str, int]] = field(default_factory=list)  # (access token, status)


class FakeGoogle(HttpFake):
    """The server; thread-safe; :meth:`reset` between tests."""

    def __init__(self, expires_in: int = 3600) -> None:
        self.expires_in = expires_in
        self.grants: dict[str, Grant] = {}
        self.tokens: dict[str, tuple[str, float]] = {}  # access token -> (email, expires at)
        self.sent: list[SentMessage] = []
        self.log = Log()
        self._script: collections.deque[tuple[int, dict[str, Any], dict[str, str]]] = (
            collections.deque()
        )
        self.codes = CodeIssuer(APP_ID, (SEND_SCOPE,))
        self.id_tokens = True  # False: the code exchange answers no ID token (no openid scope)
        self.lock = threading.Lock()
        self._serve(_handler(self))

    @property
    def token_uri(self) -> str:
        """The token endpoint."""
        return f"{self.url}/token"

    @property
    def authorize_uri(self) -> str:
        """The consent page (``MAILDISPATCH_GOOGLE_AUTHORIZE_URI``)."""
        return f"{self.url}{AUTHORIZE_PATH}"

    def reset(self) -> None:
        """Forget everything (grants, tokens, messages, script, log)."""
        with self.lock:
            self.grants.clear()
            self.tokens.clear()
            self.sent.clear()
            self._script.clear()
            self.log = Log()
            self.expires_in = 3600
            self.codes = CodeIssuer(APP_ID, (SEND_SCOPE,))
            self.id_tokens = True

    def grant(self, email_address: str, client_id: str, client_secret: str) -> str:
        """A new refresh token for an account (what the OAuth consent flow would return)."""
        token = f"1//fake-refresh-{secrets.token_urlsafe(24)}"
        with self.lock:
            self.grants[token] = Grant(email_address, client_id, client_secret)
        return token

    def revoke(self, refresh_token: str) -> None:
        """The user revoked access: the refresh token now gets invalid_grant."""
        with self.lock:
            self.grants[refresh_token].revoked = True
            email_address = self.grants[refresh_token].email
            for access, (owner, _) in list(self.tokens.items()):
                if owner == email_address:
                    del self.tokens[access]

    def holder(self, access_token: str) -> str | None:
        """Whose valid access token this is (Gmail's SMTP server checking XOAUTH2)."""
        with self.lock:
            owner, expires = self.tokens.get(access_token, ("", 0.0))
        return owner if owner and expires >= time.time() else None

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is now rejected with 401 (revoked early)."""
        with self.lock:
            self.tokens.clear()

    def script(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next send request (after the token check) with this instead."""
        with self.lock:
            self._script.append((status, body, headers or {}))

    def messages_for(self, address: str) -> list[SentMessage]:
        """Messages sent by one account."""
        with self.lock:
            return [m for m in self.sent if m.account == address]

    # -- request handling (server threads) --------------------------------------------------------
    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") == "authorization_code":
            user = self.codes.redeem(form, APP_SECRET)
            if user is None:
                self.log.token_requests.append("invalid_grant")
                return 400, {"error": "invalid_grant", "error_description": "Bad Request"}
            refresh = self.grant(user, APP_ID, APP_SECRET)
            status, body = self._token(
                {**form, "grant_type": "refresh_token", "refresh_token": refresh}
            )
            claims = {"email": user, "email_verified": True, "aud": APP_ID}
            extra = {"id_token": id_token(claims)} if self.id_tokens else {}
            return status, body | {"refresh_token": refresh} | extra
        with self.lock:
            if form.get("grant_type") != "refresh_token":
                self.log.token_requests.append("unsupported_grant_type")
                return 400, {"error": "unsupported_grant_type"}
            grant = self.grants.get(form.get("refresh_token", ""))
            if grant is not None and (
                form.get("client_id"),
                form.get("client_secret"),
            ) != (grant.client_id, grant.client_secret):
                self.log.token_requests.append("invalid_client")
                return 401, {"error": "invalid_client", "error_description": "Unauthorized"}
            if grant is None or grant.revoked:
                self.log.token_requests.append("invalid_grant")
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                }
            access = f"ya29.fake-{secrets.token_urlsafe(24)}"
            self.tokens[access] = (grant.email, time.time() + self.expires_in)
            self.log.token_requests.append("ok")
            return 200, {
                "access_token": access,
                "expires_in": self.expires_in,
                "token_type": "Bearer",
                "scope": "https://www.googleapis.com/auth/gmail.send",
            }

    def _send(self, authorization: str, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        access = authorization.removeprefix("Bearer ").strip()
        with self.lock:
            owner, expires = self.tokens.get(access, ("", 0.0))
            if not owner or expires < time.time():
                self.log.send_requests.append((access, 401))
                return 401, _error(401, "authError", "Invalid Credentials", "UNAUTHENTICATED"), {}
            if self._script:
                status, answer, headers = self._script.popleft()
                self.log.send_requests.append((access, status))
                return status, answer, headers
            try:
                raw = base64.urlsafe_b64decode(json.loads(body)["raw"])
            except (ValueError, KeyError, TypeError, binascii.Error):
                self.log.send_requests.append((access, 400))
                return 400, _error(400, "invalidArgument", "Invalid value for ByteString"), {}
            gmail_id = secrets.token_hex(8)
            self.sent.append(SentMessage(owner, raw, gmail_id))
            self.log.send_requests.append((access, 200))
            return 200, {"id": gmail_id, "threadId": secrets.token_hex(8), "labelIds": ["SENT"]}, {}


def _error(code: int, reason: str, message: str, status: str = "") -> dict[str, Any]:
    """Google's JSON error shape."""
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status,
        }
    }


def rate_limited(retry_after: int | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Gmail's 429 for a user over their sending rate."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    body = _error(429, "rateLimitExceeded", "User-rate limit exceeded", "RESOURCE_EXHAUSTED")
    return 429, body, headers


def bad_request(reason: str, message: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A 400 with Google's reason."""
    return 400, _error(400, reason, message, "INVALID_ARGUMENT"), {}


def server_error() -> tuple[int, dict[str, Any], dict[str, str]]:
    """A 503 backend error."""
    return 503, _error(503, "backendError", "Backend Error", "UNAVAILABLE"), {}


def _handler(fake: FakeGoogle) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == PROFILE_PATH:  # users.getProfile
                access = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                with fake.lock:
                    owner, expires = fake.tokens.get(access, ("", 0.0))
                if not owner or expires < time.time():
                    self._answer(401, _error(401, "authError", "Invalid Credentials"), {})
                else:
                    self._answer(200, {"emailAddress": owner, "messagesTotal": 0}, {})
                return
            if parts.path != AUTHORIZE_PATH:
                self._answer(404, _error(404, "notFound", "Not Found"), {})
                return
            status, where = fake.codes.consent({k: v[0] for k, v in parse_qs(parts.query).items()})
            if status == 302:
                self.send_response(302)
                self.send_header("Location", where)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._answer(status, {"error": where}, {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.path == "/token":
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                status, answer = fake._token(form)
                self._answer(status, answer, {})
            elif self.path == SEND_PATH:
                self._answer(*fake._send(self.headers.get("Authorization", ""), body))
            else:
                self._answer(404, _error(404, "notFound", "Not Found"), {})

    return Handler
