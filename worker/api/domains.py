"""``/v1/domains``: an owner's sending domains on MSC (worker/domains/): added (the answer lists
the DNS records to publish), looked at, verified. A key for one owner sees that owner's only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from config.settings import Settings
from worker.accounts.vault import Vault
from worker.api import ERRORS, Caller, ErrorBody, ErrorItem, Invalid, check_owners, require
from worker.api import read_owner as owner_read
from worker.domains import manage
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


def router(store: Callable[[], Store], settings: Settings) -> APIRouter:
    """The domain routes over the store."""
    api = APIRouter(prefix="/v1/domains", tags=["domains"])
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

    @api.post("", status_code=201, response_model=DomainOut, responses=errors)
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

    @api.get("", response_model=list[DomainOut], responses=errors)
    def list_domains(
        caller: Annotated[Caller, Depends(require("read"))], owner: str | None = None
    ) -> list[dict[str, Any]]:
        """Domains (one owner's, given one; a key for one owner lists that owner's)."""
        owner = owner_read(caller, owner)
        with store().session() as session:
            return [manage.shown(r, settings) for r in manage.listed(session, owner)]

    @api.get("/{domain}", response_model=DomainOut, responses=errors | missing)
    def get_domain(
        domain: str, caller: Annotated[Caller, Depends(require("read"))]
    ) -> dict[str, Any]:
        """A domain, its records and the state of each at the last check."""
        with store().session() as session:
            return manage.shown(mine(caller, session, domain), settings)

    @api.post("/{domain}/verify", response_model=DomainOut, responses=errors | missing)
    def verify_domain(
        domain: str, caller: Annotated[Caller, Depends(require("send"))]
    ) -> dict[str, Any]:
        """Look the records up in DNS now (MSC signs as the domain once it is verified)."""
        with store().session() as session:
            return manage.shown(manage.verify(mine(caller, session, domain), settings), settings)

    return api
