"""``GET /v1/messages``: the message history (worker/history/), an owner's jobs and outcomes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from config.states import FINAL
from worker.api import ERRORS, Caller, ErrorItem, Invalid, read_owner, require
from worker.history import query
from worker.store import Store


class MessageItem(BaseModel):
    """A job of the history: its outcome as ``GET /v1/messages/{id}`` shows it."""

    id: str
    owner: str
    channel: str
    state: str
    recipients: list[str]
    metadata: dict[str, Any]
    subject: str | None = None
    attempts: int = 0
    enqueued_at: float | None = None
    updated_at: float | None = None
    #: when its outcome was first recorded (``since`` filters on it)
    finished_at: float
    reply: str | None = None
    last_error: str | None = None
    provider_id: str | None = None
    from_address: str | None = None


class MessagePage(BaseModel):
    """A page of the history, newest outcome first; pass ``next_cursor`` as ``cursor`` for the
    next (older) page (null: this is the last)."""

    messages: list[MessageItem]
    next_cursor: int | None


def check_state(state: str | None) -> str | None:
    """``state`` when it is a final state (422 otherwise)."""
    finals = sorted(FINAL)
    if state and state not in finals:
        message = f"unknown final state; use one of {', '.join(finals)}"
        raise Invalid("invalid request", [ErrorItem(field="state", message=message)])
    return state or None


def router(store: Callable[[], Store]) -> APIRouter:
    """The history's listing over the store."""
    api = APIRouter(prefix="/v1/messages", tags=["messages"])
    read_errors: dict[int | str, dict[str, Any]] = {
        k: v for k, v in ERRORS.items() if k in (401, 403, 422)
    }

    @api.get("", response_model=MessagePage, responses=read_errors)
    def list_messages(
        caller: Annotated[Caller, Depends(require("read"))],
        owner: str | None = None,
        recipient: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        cursor: Annotated[int | None, Query(ge=1)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> MessagePage:
        """An owner's jobs that reached an outcome within ``MAILDISPATCH_HISTORY_DAYS`` (all
        owners' without ``owner``), newest first: ``recipient`` finds one address's (whatever
        its case), ``state`` one outcome's, ``since`` those recorded since then.

        A key for one owner lists that owner's only (``owner`` may be left out).
        """
        owner = read_owner(caller, owner)
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        with store().session() as session:
            page = query.list_messages(
                session,
                owner,
                recipient=recipient,
                state=check_state(state),
                since=since,
                cursor=cursor,
                limit=limit,
            )
        return MessagePage(
            messages=[MessageItem(**m.as_dict()) for m in page.items],
            next_cursor=page.next_cursor,
        )

    return api


def job_history(store: Callable[[], Store]) -> Callable[[str], dict[str, str] | None]:
    """For ``GET /v1/messages/{id}``: a job's state hash from the history, once Redis' is gone."""

    def status(job_id: str) -> dict[str, str] | None:
        with store().session() as session:
            message = query.get_message(session, job_id)
        if message is None:
            return None
        return message.state_hash()

    return status
