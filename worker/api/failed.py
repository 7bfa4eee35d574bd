"""``/v1/failed-sends``: list (newest first, by cursor), show, and resend Failed Sends."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel

from producers.client import Dispatcher
from worker.api import ERRORS, Caller, ErrorBody, ErrorItem, Invalid, read_owner, require
from worker.failures.resend import CannotResend, resend
from worker.failures.rows import FailedSendOut, failed_out
from worker.store import Store, repo
from worker.store.models import FAILED_KINDS

log = structlog.get_logger("maildispatch.http")


class FailedSendPage(BaseModel):
    """A page of Failed Sends; pass ``next_cursor`` as ``cursor`` for the next (older) page."""

    items: list[FailedSendOut]
    next_cursor: int | None


class Resent(BaseModel):
    """The new job that resends a Failed Send."""

    id: uuid.UUID
    resend_of: int


def check_kind(kind: str | None) -> str | None:
    """``kind`` when it is one of the Failed Send kinds (422 otherwise)."""
    if kind and kind not in FAILED_KINDS:
        message = f"unknown kind; use one of {', '.join(FAILED_KINDS)}"
        raise Invalid("invalid request", [ErrorItem(field="kind", message=message)])
    return kind or None


def router(store: Callable[[], Store], dispatcher: Dispatcher) -> APIRouter:
    """The Failed Sends routes over the store."""
    api = APIRouter(prefix="/v1/failed-sends", tags=["failed sends"])
    read_errors: dict[int | str, dict[str, Any]] = {
        k: v for k, v in ERRORS.items() if k in (401, 403, 422)
    }

    @api.get("", response_model=FailedSendPage, responses=read_errors)
    def list_failed(
        caller: Annotated[Caller, Depends(require("read"))],
        owner: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        recipient: str | None = None,
        cursor: Annotated[int | None, Query(ge=1)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> FailedSendPage:
        """An owner's Failed Sends (all owners without ``owner``), newest first; ``recipient``
        finds one address's (whatever its case).

        A key for one owner lists that owner's only (``owner`` may be left out).
        """
        owner = read_owner(caller, owner)
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        with store().session() as session:
            page = repo.list_failed_sends(
                session,
                owner,
                kind=check_kind(kind),
                since=since,
                recipient=recipient,
                cursor=cursor,
                limit=limit,
            )
            return FailedSendPage(
                items=[failed_out(r) for r in page.items], next_cursor=page.next_cursor
            )

    @api.get(
        "/{failed_id}",
        response_model=FailedSendOut,
        responses=read_errors | {404: {"model": ErrorBody}},
    )
    def show_failed(
        failed_id: int, caller: Annotated[Caller, Depends(require("read"))]
    ) -> FailedSendOut:
        """One Failed Send."""
        with store().session() as session:
            row = repo.get_failed_send(session, failed_id)
            if row is None or not caller.sees(row.owner):
                raise HTTPException(404, f"no Failed Send {failed_id}")
            return failed_out(row)

    @api.post(
        "/{failed_id}/resend",
        status_code=202,
        response_model=Resent,
        responses=read_errors | {404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
    )
    def resend_failed(
        failed_id: int, caller: Annotated[Caller, Depends(require("send"))]
    ) -> Resent:
        """Enqueue the failed job again, to the failed recipient, as a new job linked to it."""
        return Resent(id=resend_row(store(), dispatcher, failed_id, caller), resend_of=failed_id)

    return api


def resend_row(store: Store, dispatcher: Dispatcher, failed_id: int, caller: Caller) -> uuid.UUID:
    """Resend one Failed Send (the same new job if it was resent already).

    A row of an owner the caller's key is not for is unknown to it (404).
    """
    with store.session() as session:
        row = repo.get_failed_send(session, failed_id)
        if row is None or not caller.sees(row.owner):
            raise HTTPException(404, f"no Failed Send {failed_id}")
    try:
        new_id = resend(store, dispatcher, failed_id)
    except CannotResend as exc:
        raise HTTPException(409, str(exc)) from None
    log.info("failed_send_resent", failed_id=failed_id, job_id=str(new_id), caller=caller.name)
    return new_id


def job_failures(store: Callable[[], Store]) -> Callable[[str], list[dict[str, Any]]]:
    """For ``GET /v1/messages/{id}``: the Failed Send rows of a job."""

    def failures(job_id: str) -> list[dict[str, Any]]:
        with store().session() as session:
            rows = repo.failed_sends_for_job(session, job_id)
            return [failed_out(r).model_dump(mode="json") for r in rows]

    return failures
