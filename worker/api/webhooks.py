"""``/v1/webhooks``: an owner's webhook endpoints (worker/webhooks/), added, listed, removed.

Adding one answers its signing secret, once. A key for one owner manages that owner's
endpoints only; an endpoint for every owner's events (``owner`` left out) needs a key for
every owner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field

from config.settings import Settings
from worker.accounts.vault import Vault
from worker.api import ERRORS, Caller, ErrorBody, ErrorItem, Invalid, check_owners, require
from worker.api import read_owner as owner_read
from worker.channels.netguard import NetworkPolicy
from worker.store import Store
from worker.webhooks import endpoints


class EndpointIn(BaseModel):
    """An endpoint to add."""

    model_config = ConfigDict(extra="forbid")

    owner: str | None = Field(
        None, max_length=200, description="left out (or *): every owner's events"
    )
    url: str = Field(max_length=2000, description="where events are POSTed")
    events: list[str] | None = Field(None, description="the types it receives; left out: all")


class EndpointAdded(BaseModel):
    """The new endpoint's id, and its secret: shown this once, kept only encrypted."""

    id: int
    secret: str


class EndpointOut(BaseModel):
    """An endpoint (never its secret)."""

    id: int
    owner: str | None
    url: str
    events: list[str] | None
    state: str = Field(description="enabled, or disabled (then disabled_reason says why)")
    disabled_reason: str | None
    created_at: str


def router(store: Callable[[], Store], settings: Settings) -> APIRouter:
    """The endpoint routes over the store."""
    api = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
    vault = Vault.from_settings(settings)
    policy = NetworkPolicy.from_settings(settings)
    errors: dict[int | str, dict[str, Any]] = {
        k: v for k, v in ERRORS.items() if k in (401, 403, 422)
    }

    @api.post("", status_code=201, response_model=EndpointAdded, responses=errors)
    def add_endpoint(
        wanted: EndpointIn, caller: Annotated[Caller, Depends(require("send"))]
    ) -> EndpointAdded:
        """Add an endpoint for an owner's events (every owner's: ``owner`` left out or ``*``,
        with a key for every owner)."""
        check_owners(caller, [wanted.owner or "*"])
        try:
            with store().session() as session:
                row, secret = endpoints.add(
                    session, vault, policy, wanted.owner, wanted.url, wanted.events
                )
                return EndpointAdded(id=row.id, secret=secret)
        except endpoints.InvalidEndpoint as exc:
            field, _, message = str(exc).partition(": ")
            raise Invalid("invalid request", [ErrorItem(field=field, message=message)]) from None

    @api.get("", response_model=list[EndpointOut], responses=errors)
    def list_endpoints(
        caller: Annotated[Caller, Depends(require("read"))], owner: str | None = None
    ) -> list[EndpointOut]:
        """Endpoints (an owner's only, given one; a key for one owner lists that owner's)."""
        owner = owner_read(caller, owner)
        with store().session() as session:
            return [EndpointOut(**endpoints.shown(r)) for r in endpoints.listed(session, owner)]

    @api.delete("/{endpoint_id}", status_code=204, responses=errors | {404: {"model": ErrorBody}})
    def remove_endpoint(
        endpoint_id: int, caller: Annotated[Caller, Depends(require("send"))]
    ) -> Response:
        """Remove an endpoint; events not delivered to it yet are dropped."""
        with store().session() as session:
            row = endpoints.get(session, endpoint_id)
            if row is None or not (caller.owner is None or caller.owner == row.owner):
                raise HTTPException(404, f"no endpoint {endpoint_id}")
            endpoints.remove(session, endpoint_id)
        return Response(status_code=204)

    return api
