"""``/v1/suppressions``: an owner's suppressed addresses — list, add (an unsubscribe), remove.

MSC sends nothing to a suppressed address: the job's recipient fails at once as a Failed Send
of kind ``suppressed``. Hard bounces and complaints add addresses (worker/bounces/intake/ingest.py);
a product adds those its users unsubscribed, and removes one its user asks to mail again. Owner
``*`` is the operator-wide list: listed to keys that act for every owner, changed only by the
operator (``maildispatch suppressions add|remove --owner '*'``), never over the API.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel

from worker.api import ERRORS, Caller, ErrorBody, check_owners, read_owner, require
from worker.failures.suppressions import SuppressionIn
from worker.store import Store, repo
from worker.store.models import Suppression, stored_utc
from worker.store.repo import OPERATOR

log = structlog.get_logger("maildispatch.http")


class SuppressionOut(BaseModel):
    """An address not to send to, for one owner (``*``: every owner)."""

    id: int
    owner: str
    address: str
    #: the bounce reason ("userunknown", "complaint"...) or what the caller gave
    reason: str
    #: the job whose bounce put it there
    job_id: str | None
    created_at: datetime


class SuppressionPage(BaseModel):
    """A page of suppressions; pass ``next_cursor`` as ``cursor`` for the next (older) page."""

    items: list[SuppressionOut]
    next_cursor: int | None


def suppression_out(row: Suppression) -> SuppressionOut:
    """The API form of a row."""
    return SuppressionOut(
        id=row.id,
        owner=row.owner,
        address=row.address,
        reason=row.reason,
        job_id=row.source_job_id,
        created_at=stored_utc(row.created_at),
    )


def _not_operator_wide(owner: str) -> None:
    if owner == OPERATOR:
        raise HTTPException(
            403, "the operator-wide list (*) is changed with `maildispatch suppressions`"
        )


def lift(store: Store, caller: Caller, owner: str, address: str) -> None:
    """Take ``address`` off ``owner``'s list, as ``caller`` may (the API's DELETE and the page's
    Allow again): 404 when it is not there (or not the caller's to see), 403 for the
    operator-wide list."""
    if not caller.sees(owner):
        raise HTTPException(404, f"{address} is not suppressed for {owner}")
    _not_operator_wide(owner)
    with store.session() as session:
        removed = repo.unsuppress(session, owner, address)
    if not removed:
        raise HTTPException(404, f"{address} is not suppressed for {owner}")
    log.info("suppression_removed", owner=owner, caller=caller.name)


def router(store: Callable[[], Store]) -> APIRouter:
    """The suppression routes over the store."""
    api = APIRouter(prefix="/v1/suppressions", tags=["suppressions"])
    errors: dict[int | str, dict[str, Any]] = {
        k: v for k, v in ERRORS.items() if k in (401, 403, 422)
    }

    @api.get("", response_model=SuppressionPage, responses=errors)
    def list_suppressed(
        caller: Annotated[Caller, Depends(require("read"))],
        owner: str | None = None,
        address: str | None = None,
        cursor: Annotated[int | None, Query(ge=1)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> SuppressionPage:
        """An owner's suppressed addresses (every owner's without ``owner``), newest first;
        ``address`` asks about one address."""
        with store().session() as session:
            rows = repo.list_suppressions(
                session,
                read_owner(caller, owner),
                address=address,
                cursor=cursor,
                limit=limit + 1,
            )
            more = len(rows) > limit
            items = [suppression_out(r) for r in rows[:limit]]
        return SuppressionPage(items=items, next_cursor=items[-1].id if more else None)

    @api.post("", status_code=201, response_model=SuppressionOut, responses=errors)
    def add_suppression(
        body: SuppressionIn, caller: Annotated[Caller, Depends(require("send"))]
    ) -> SuppressionOut:
        """Suppress an address for an owner (adding one already there changes nothing)."""
        check_owners(caller, [body.owner])
        _not_operator_wide(body.owner)
        with store().session() as session:
            repo.suppress(session, body.owner, [body.address], body.reason)
            (row,) = repo.list_suppressions(session, body.owner, address=body.address)
            log.info("suppression_added", owner=body.owner, caller=caller.name)
            return suppression_out(row)

    @api.delete(
        "", status_code=204, responses=errors | {404: {"model": ErrorBody}}, response_class=Response
    )
    def remove_suppression(
        owner: str, address: str, caller: Annotated[Caller, Depends(require("send"))]
    ) -> Response:
        """Send to an address again: remove it from the owner's list."""
        lift(store(), caller, owner, address)
        return Response(status_code=204)

    return api
