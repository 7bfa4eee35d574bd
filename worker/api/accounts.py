"""``/v1/accounts``: an owner's connected accounts, for products (worker/accounts/).

Connect Gmail or Microsoft 365 through the provider's consent page (``POST
/v1/accounts/{gmail|microsoft}/authorize``, then the provider sends the user to ``GET
/v1/oauth/callback``, which stores the grant and sends the user back to the product's page), set
a custom SMTP server (the password in the body, never answered back), list accounts and their
state, choose the preferred channel, remove one. A key for one owner manages that owner only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog
from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from config.channels import CHANNELS, OWNER_ACCOUNT
from config.settings import Settings
from producers.client import Dispatcher
from worker.accounts import connect, manage
from worker.accounts.vault import Vault
from worker.api import ERRORS, Caller, ErrorBody, ErrorItem, Invalid, check_owners, require
from worker.api import read_owner as owner_read
from worker.api.pages import text_page
from worker.store import Store

log = structlog.get_logger("maildispatch.http")


class AuthorizeIn(BaseModel):
    """Whose account to connect, and the product's page to come back to."""

    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1, max_length=200)
    email: str | None = Field(
        None,
        max_length=320,
        description="the mailbox, when known: the provider's login_hint (and the address used "
        "if the provider answers no ID token)",
    )
    return_to: str | None = Field(
        None,
        max_length=2000,
        description="absolute http(s) URL; the user comes back to it with connected=<kind> "
        "or error=<reason> added to its query",
    )


class AuthorizeOut(BaseModel):
    """Send the user's browser here."""

    authorization_url: str


class SmtpIn(BaseModel):
    """A custom SMTP server and its login (the password is never answered back)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(max_length=255)
    port: int = Field(ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = Field(max_length=320)
    password: str = Field(min_length=1, max_length=1000)
    ca_pem: str | None = Field(None, max_length=100_000, description="the only CA to trust")


class PreferredIn(BaseModel):
    """The channel of the owner's jobs that name none."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(description=f"one of {', '.join(CHANNELS)}")


class AccountsOut(BaseModel):
    """An owner's preferred channel and accounts (state, never a secret)."""

    owner: str
    preferred_channel: str
    accounts: list[dict[str, Any]]


def router(store: Callable[[], Store], dispatcher: Dispatcher, settings: Settings) -> APIRouter:
    """The account routes over the store (and the preference mirror in Redis)."""
    api = APIRouter(tags=["accounts"])
    vault = Vault.from_settings(settings)
    errors: dict[int | str, dict[str, Any]] = {
        k: v for k, v in ERRORS.items() if k in (401, 403, 422)
    }
    gone: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "none"}}

    def refused(field: str, exc: Exception) -> Invalid:
        return Invalid("invalid request", [ErrorItem(field=field, message=str(exc))])

    @api.post("/v1/accounts/{kind}/authorize", response_model=AuthorizeOut, responses=errors)
    def authorize(
        kind: Literal["gmail", "microsoft"],
        wanted: AuthorizeIn,
        caller: Annotated[Caller, Depends(require("send"))],
    ) -> AuthorizeOut:
        """Start connecting an owner's Gmail or Microsoft 365 account: the provider's consent
        URL (OAuth 2.0 authorization code with ``state`` and PKCE, valid 10 minutes)."""
        check_owners(caller, [wanted.owner])
        try:
            url = connect.start(
                dispatcher.redis, settings, kind, wanted.owner, wanted.return_to, wanted.email
            )
        except connect.ConnectError as exc:
            raise refused("return_to" if "return_to" in str(exc) else "kind", exc) from None
        log.info("account_connect_started", kind=kind, owner=wanted.owner)
        return AuthorizeOut(authorization_url=url)

    @api.get("/v1/oauth/callback", response_class=HTMLResponse, include_in_schema=True)
    def oauth_callback(
        state: str = "",
        code: str = "",
        error: str = Query("", max_length=100),
    ) -> Response:
        """Where the provider sends the user back: the code is exchanged (with the PKCE
        verifier), the grant stored, and the user sent to ``return_to``. An unknown, used or
        expired ``state`` is refused and nothing is stored."""
        try:
            kept = connect.take_state(dispatcher.redis, state)
        except connect.ConnectError as exc:
            return text_page("This connection link is not valid", str(exc), 400)
        back = kept.get("return_to")
        try:
            if error or not code:
                raise connect.ConnectError(f"the provider did not connect: {error or 'no code'}")
            with store().session() as session:
                done = connect.finish(session, vault, settings, kept, code)
        except (connect.ConnectError, manage.AccountError) as exc:
            log.warning("account_connect_failed", kind=kept["kind"], owner=kept["owner"])
            if back:
                return RedirectResponse(_with(back, error=error or "not_connected"), 303)
            return text_page("The account was not connected", str(exc), 400)
        log.info("account_connected", kind=done.kind, owner=done.owner, channel=done.channel)
        if done.return_to:
            return RedirectResponse(_with(done.return_to, connected=done.kind), 303)
        return text_page("Account connected", f"{done.address} can now send for {done.owner}.", 200)

    @api.put("/v1/accounts/{owner}/smtp", response_model=dict[str, Any], responses=errors)
    def set_smtp(
        owner: str, server: SmtpIn, caller: Annotated[Caller, Depends(require("send"))]
    ) -> dict[str, Any]:
        """Set (or replace) the owner's custom SMTP server; the answer never has the password."""
        check_owners(caller, [owner])
        try:
            with store().session() as session:
                manage.set_smtp(
                    session,
                    vault,
                    settings=settings,
                    owner=owner,
                    host=server.host,
                    port=server.port,
                    security=server.security,
                    username=server.username,
                    password=server.password,
                    ca_pem=server.ca_pem,
                )
                return manage.summary(session, owner, "smtp")
        except manage.AccountError as exc:
            raise refused("body", exc) from None

    @api.get("/v1/accounts", response_model=list[AccountsOut], responses=errors)
    def list_accounts(
        caller: Annotated[Caller, Depends(require("read"))], owner: str | None = None
    ) -> list[AccountsOut]:
        """Owners' preferred channels and accounts with their state (one owner's, given one)."""
        owner = owner_read(caller, owner)
        with store().session() as session:
            return [AccountsOut(**entry) for entry in manage.summaries(session, owner)]

    @api.put("/v1/accounts/{owner}/preferred", response_model=AccountsOut, responses=errors)
    def prefer(
        owner: str, wanted: PreferredIn, caller: Annotated[Caller, Depends(require("send"))]
    ) -> AccountsOut:
        """Choose the channel of the owner's jobs that name none."""
        check_owners(caller, [owner])
        try:
            with store().session() as session:
                manage.set_preference(session, owner, wanted.channel)
                (entry,) = manage.summaries(session, owner)
        except manage.AccountError as exc:
            raise refused("channel", exc) from None
        manage.mirror_preference(dispatcher.redis, owner, wanted.channel)
        return AccountsOut(**entry)

    @api.delete("/v1/accounts/{owner}/{channel}", status_code=204, responses=errors | gone)
    def remove(
        owner: str,
        channel: str,
        caller: Annotated[Caller, Depends(require("send"))],
    ) -> Response:
        """Forget the owner's Gmail account or SMTP server (a preference for it becomes msc)."""
        check_owners(caller, [owner])
        if channel not in OWNER_ACCOUNT:
            raise refused("channel", ValueError(f"channel must be one of {OWNER_ACCOUNT}"))
        with store().session() as session:
            removed, reset = manage.remove(session, owner, channel)
        if not removed:
            raise HTTPException(404, f"{owner} has no {channel} account")
        if reset:
            manage.mirror_preference(dispatcher.redis, owner, "msc")
        return Response(status_code=204)

    return api


def _with(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query."""
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *params.items()])
    return urlunsplit(parts._replace(query=query))
