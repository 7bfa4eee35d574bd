"""The authorization-code half of an OAuth 2.0 server (RFC 6749 §4.1 with PKCE, RFC 7636), shared
by the Google and Microsoft fakes: the consent page (a redirect, as if the user agreed at once)
and the code's redemption at the token endpoint, with every check a real provider makes."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass
from urllib.parse import urlencode


@dataclass
class Code:
    """A code handed to the browser: for whom, which client, where, and the PKCE challenge."""

    user: str
    client_id: str
    redirect_uri: str
    challenge: str
    used: bool = False


class CodeIssuer:
    """Consent and redemption; ``user`` is who consents next (None: the user refuses)."""

    def __init__(self, client_id: str, required_scopes: tuple[str, ...]) -> None:
        self.client_id = client_id
        self.required_scopes = required_scopes
        self.user: str | None = None
        self.codes: dict[str, Code] = {}
        self.refusals: list[str] = []  # why redemptions were refused, in order
        self.lock = threading.Lock()

    def consent(self, query: dict[str, str]) -> tuple[int, str]:
        """``GET /authorize``: (302, Location back to the client) or (400, why)."""
        checks = {
            "client_id": query.get("client_id") == self.client_id,
            "response_type": query.get("response_type") == "code",
            "redirect_uri": bool(query.get("redirect_uri")),
            "code_challenge_method": query.get("code_challenge_method") == "S256",
            "code_challenge": len(query.get("code_challenge", "")) == 43,
            "scope": set(self.required_scopes) <= set(query.get("scope", "").split()),
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            return 400, f"invalid_request: {', '.join(wrong)}"
        back = {"state": query.get("state", "")}
        with self.lock:
            if self.user is None:
                back["error"] = "access_denied"
            else:
                code = secrets.token_urlsafe(24)
                self.codes[code] = Code(
                    self.user, query["client_id"], query["redirect_uri"], query["code_challenge"]
                )
                back["code"] = code
        return 302, f"{query['redirect_uri']}?{urlencode(back)}"

    def redeem(self, form: dict[str, str], client_secret: str) -> str | None:
        """The user of a good ``authorization_code`` grant, once; None (and a refusal noted)."""
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        with self.lock:
            code = self.codes.get(form.get("code", ""))
            checks = {
                "code": code is not None and not code.used,
                "client": (form.get("client_id"), form.get("client_secret"))
                == (self.client_id, client_secret),
                "redirect_uri": code is not None and form.get("redirect_uri") == code.redirect_uri,
                "code_verifier": code is not None
                and base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == code.challenge,
            }
            wrong = [name for name, ok in checks.items() if not ok]
            if code is not None:
                code.used = True  # a code is single-use, even when the attempt failed
            if wrong or code is None:
                self.refusals.append(",".join(wrong))
                return None
            return code.user


def id_token(claims: dict[str, object]) -> str:
    """An ID token as the token endpoint returns it (its signature is not checked by clients
    that received it straight from the endpoint, so this one is not signed)."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"
