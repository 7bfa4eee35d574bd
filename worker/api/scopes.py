"""Who is calling: API keys, their scopes and the owner a key acts for."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client.registry import Collector

from worker.api.models import ErrorItem, OtherOwner

log = structlog.get_logger("maildispatch.http")


# -- who is calling ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Caller:
    """The calling service, as its API key names it."""

    key_id: int
    name: str
    scopes: frozenset[str]
    #: None: the key acts for every owner; else for this owner only
    owner: str | None = None

    def sees(self, owner: str | None) -> bool:
        """May this caller send as, and read what belongs to, ``owner``?"""
        return self.owner is None or owner == self.owner


class KeyChecker(Protocol):
    """Resolves a presented API key to its caller (None: unknown or revoked)."""

    def check(self, key: str) -> Caller | None:
        """The caller of an active key."""
        ...


@dataclass(frozen=True)
class Extensions:
    """What the operator's side adds to the intake (``worker/api/app.py`` builds one)."""

    keys: KeyChecker
    routers: Sequence[APIRouter] = ()
    #: name -> check: raises when failing; a returned text is a warning
    health: Mapping[str, Callable[[], object]] = field(default_factory=dict)
    collectors: Sequence[Collector] = ()
    #: the Failed Send rows of a job, shown by ``GET /v1/messages/{id}``
    job_failures: Callable[[str], list[dict[str, Any]]] | None = None
    #: a job's state hash from the message history, once Redis' has expired
    job_history: Callable[[str], dict[str, str] | None] | None = None


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="or `X-API-Key`")


def require(scope: str) -> Callable[..., Caller]:
    """A dependency: a valid API key with ``scope`` (401 without a valid key, 403 without scope)."""

    def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header_key)],
    ) -> Caller:
        key = bearer.credentials if bearer else header
        challenge = {"WWW-Authenticate": 'Bearer realm="maildispatch"'}
        if not key:
            raise HTTPException(401, "an API key is required", headers=challenge)
        caller: Caller | None = request.app.state.keys.check(key)
        if caller is None:
            log.warning("api_key_rejected", path=request.url.path)
            raise HTTPException(401, "invalid or revoked API key", headers=challenge)
        request.state.caller = caller
        if scope not in caller.scopes:
            raise HTTPException(403, f"this API key lacks the {scope!r} scope")
        return caller

    return dependency


def read_owner(caller: Caller, owner: str | None) -> str | None:
    """The owner a listing is about: a key for one owner lists that owner's only (``owner`` may
    be left out; another owner is :class:`OtherOwner`). None: every owner."""
    if caller.owner is None:
        return owner
    if owner not in (None, caller.owner):
        message = f"this API key reads only owner {caller.owner!r}"
        raise OtherOwner("another owner", [ErrorItem(field="owner", message=message)])
    return caller.owner


def check_owners(caller: Caller, owners: Sequence[str], batch: bool = False) -> None:
    """Every job's owner is one the caller's key acts for, or :class:`OtherOwner`."""
    if caller.owner is None:
        return
    message = f"this API key sends only for owner {caller.owner!r}"
    errors = [
        ErrorItem(index=i if batch else None, field="owner", message=message)
        for i, owner in enumerate(owners)
        if owner != caller.owner
    ]
    if errors:
        raise OtherOwner(f"{len(errors)} job(s) of another owner; nothing was enqueued", errors)
