"""``/v1/domains`` and ``/v1/identities``: what an owner sends as on MSC (worker/domains/).

Domains are added (the answer lists the DNS records to publish), looked at, verified; single
addresses get a confirmation link by mail, whose page (``/v1/identities/confirm/{token}``, no
API key: the token is the authority) confirms on its button's POST only. A key for one owner
sees that owner's only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from config.settings import Settings
from producers.client import Dispatcher
from worker.accounts.vault import Vault
from worker.api import ERRORS, Caller, ErrorBody, ErrorItem, Invalid, check_owners, require
from worker.api import read_owner as owner_read
from worker.api.pages import text_page
from worker.domains import manage, senders
from worker.store import Store
from worker.store.models import SendingDomain


class DomainIn(BaseModel):
    """A domain to send from."""

    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1, max_length=200)
    domain: str = Field(min_length=1, max_length=253)


class RecordOut(BaseModel):
    """A DNS record to publish, and whether the last check found it."""

    type: str
    name: str
    value: str
    state: str = Field(description="unchecked, found or missing")


class DomainOut(BaseModel):
    """A sending domain."""

    domain: str
    owner: str
    state: str = Field(description="pending, verified, or failed (a record is gone since)")
    return_path_domain: str
    records: list[RecordOut]
    checked_at: str | None
    verified_at: str | None


class AddressIn(BaseModel):
    """A single address to send as, confirmed by the link mailed to it."""

    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1, max_length=200)
    address: str = Field(min_length=3, max_length=320)


class AddressOut(BaseModel):
    """An address and whether its mailbox confirmed it."""

    owner: str
    address: str
    state: str = Field(description="pending or confirmed")
    requested_at: str
    confirmed_at: str | None


def router(store: Callable[[], Store], dispatcher: Dispatcher, settings: Settings) -> APIRouter:
    """The domain and identity routes over the store."""
    api = APIRouter(tags=["domains"])
    vault = Vault.from_settings(settings)
    errors: dict[int | str, dict[str, Any]] = {
        k: v for k, v in ERRORS.items() if k in (401, 403, 422)
    }
    missing: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "none"}}

    def mine(caller: Caller, session: Any, domain: str) -> SendingDomain:
        row = manage.get(session, domain)
        if row is None or not caller.sees(row.owner):
            raise HTTPException(404, f"no domain {domain}")
        return row

    @api.post("/v1/domains", status_code=201, response_model=DomainOut, responses=errors)
    def add_domain(
        wanted: DomainIn, caller: Annotated[Caller, Depends(require("send"))]
    ) -> dict[str, Any]:
        """Register a domain for an owner: its DKIM keys are made, the answer lists the records
        to publish (adding it again answers the same records)."""
        check_owners(caller, [wanted.owner])
        try:
            with store().session() as session:
                row = manage.add(session, vault, wanted.owner, wanted.domain)
                return manage.shown(row, settings)
        except manage.DomainError as exc:
            raise Invalid(
                "invalid request", [ErrorItem(field="domain", message=str(exc))]
            ) from None

    @api.get("/v1/domains", response_model=list[DomainOut], responses=errors)
    def list_domains(
        caller: Annotated[Caller, Depends(require("read"))], owner: str | None = None
    ) -> list[dict[str, Any]]:
        """Domains (one owner's, given one; a key for one owner lists that owner's)."""
        owner = owner_read(caller, owner)
        with store().session() as session:
            return [manage.shown(r, settings) for r in manage.listed(session, owner)]

    @api.get("/v1/domains/{domain}", response_model=DomainOut, responses=errors | missing)
    def get_domain(
        domain: str, caller: Annotated[Caller, Depends(require("read"))]
    ) -> dict[str, Any]:
        """A domain, its records and the state of each at the last check."""
        with store().session() as session:
            return manage.shown(mine(caller, session, domain), settings)

    @api.post("/v1/domains/{domain}/verify", response_model=DomainOut, responses=errors | missing)
    def verify_domain(
        domain: str, caller: Annotated[Caller, Depends(require("send"))]
    ) -> dict[str, Any]:
        """Look the records up in DNS now (MSC signs as the domain once it is verified)."""
        with store().session() as session:
            row = manage.verify(mine(caller, session, domain), settings)
            senders.mirror_domain(dispatcher.redis, row)
            return manage.shown(row, settings)

    @api.delete("/v1/domains/{domain}", status_code=204, responses=errors | missing)
    def remove_domain(domain: str, caller: Annotated[Caller, Depends(require("send"))]) -> Response:
        """Forget a domain and its keys: its mail is signed by the operator again."""
        with store().session() as session:
            row = mine(caller, session, domain)
            senders.mirror_domain(dispatcher.redis, row, removed=True)
            manage.remove(session, row)
        return Response(status_code=204)

    @api.post("/v1/identities", status_code=202, response_model=AddressOut, responses=errors)
    def add_address(
        wanted: AddressIn, caller: Annotated[Caller, Depends(require("send"))]
    ) -> dict[str, Any]:
        """Mail a confirmation link (valid 7 days) to an address the owner wants to send as."""
        check_owners(caller, [wanted.owner])
        try:
            with store().session() as session:
                row = senders.request(session, settings, wanted.owner, wanted.address)
                shown = senders.shown(row)
            senders.mail_link(dispatcher, settings, str(shown["owner"]), str(shown["address"]))
        except manage.DomainError as exc:
            raise Invalid(
                "invalid request", [ErrorItem(field="address", message=str(exc))]
            ) from None
        return shown

    @api.get("/v1/identities", response_model=list[AddressOut], responses=errors)
    def list_addresses(
        caller: Annotated[Caller, Depends(require("read"))], owner: str | None = None
    ) -> list[dict[str, Any]]:
        """Addresses and whether they are confirmed."""
        owner = owner_read(caller, owner)
        with store().session() as session:
            return [senders.shown(r) for r in senders.listed(session, owner)]

    @api.get("/v1/identities/confirm/{token}", response_class=HTMLResponse, include_in_schema=False)
    def confirm_page(token: str) -> HTMLResponse:
        """The mailed link's page: a button; nothing confirmed yet (scanners fetch links)."""
        who = senders.read(settings, token)
        if who is None:
            return text_page(
                "Link not valid", "This confirmation link is not valid or has expired.", 404
            )
        button = '<form method="post"><button type="submit">Confirm</button></form>'
        text = f"Confirm that {who.owner} may send mail as {who.address}."
        return text_page("Confirm this address", text, 200, button)

    @api.post(
        "/v1/identities/confirm/{token}", response_class=HTMLResponse, include_in_schema=False
    )
    def confirm(token: str) -> HTMLResponse:
        """Confirm the address the link names."""
        who = senders.read(settings, token)
        if who is None:
            return text_page(
                "Link not valid", "This confirmation link is not valid or has expired.", 404
            )
        with store().session() as session:
            row = senders.confirm(session, dispatcher.redis, who)
        if row is None:
            return text_page(
                "Link not valid", "This address is no longer waiting to be confirmed.", 404
            )
        return text_page(
            "Address confirmed", f"{who.owner} may now send mail as {who.address}.", 200
        )

    return api
