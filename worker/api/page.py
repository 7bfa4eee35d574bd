"""The pages: Failed Sends (``GET /failed-sends?owner=U``) and the sent history
(``GET /messages?owner=U``, one job at ``/messages/{id}``), server-rendered, no JavaScript.

Signing in: ``/login`` takes an API key (with the ``read`` scope; ``send`` too for Resend) and
sets a signed session cookie (``worker/api/auth.py``); a request with ``Authorization: Bearer``
works as well. Every form that changes something carries a CSRF token bound to the session.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from config.channels import TITLES
from config.states import FINAL
from producers.client import Dispatcher
from worker.api import Caller, read_body
from worker.api.auth import SESSION_COOKIE, SESSION_TTL, Sessions, StoredKeys
from worker.api.failed import job_failures, resend_row
from worker.api.history import check_state, job_history
from worker.api.intake import message_status
from worker.api.models import Invalid
from worker.api.suppressions import lift
from worker.failures.send_reasons import plain_words
from worker.history import query
from worker.history.query import Message
from worker.store import Store, repo
from worker.store.models import FAILED_KINDS, FailedSend, stored_utc

log = structlog.get_logger("maildispatch.http")

PAGE_SIZE = 50
FORM_LIMIT = 8 * 1024
HEADERS = {
    # no script at all; inline styles only; forms post back here only
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page from ``templates/`` (every value HTML-escaped)."""
    html = _templates.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def row_view(row: FailedSend, suppressed: bool = False, kept: bool = True) -> dict[str, Any]:
    """What the page shows of one Failed Send (``suppressed``: its recipient is on the owner's
    suppression list now; ``kept``: its job's content is kept, so it can be resent)."""
    created = stored_utc(row.created_at)
    return {
        "id": row.id,
        "recipient": row.recipient,
        "subject": row.subject,
        "channel": TITLES.get(row.channel, row.channel),
        "when": created.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "when_iso": created.isoformat(),
        "reason": plain_words(row.reason, row.enhanced_status),
        "kind": row.kind,
        "hard": row.hard,
        "resent_job": row.resend_job_id,
        "can_resend": kept and not row.resend_job_id,
        "suppressed": suppressed,
    }


def _when(at: float | None) -> str:
    if not at:
        return ""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def message_view(message: Message) -> dict[str, Any]:
    """What the sent history shows of one job."""
    shown = message.as_dict()
    return {
        "id": message.job_id,
        "recipients": message.recipients,
        "subject": shown["subject"],
        "channel": TITLES.get(message.channel, message.channel),
        "state": message.state,
        "when": message.finished_at.strftime("%Y-%m-%d %H:%M UTC"),
        "when_iso": message.finished_at.isoformat(),
        "detail": shown["reply"] if message.state == "sent" else shown["last_error"],
    }


def _safe_next(target: str | None) -> str:
    # only a path on this site: never an open redirect
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/failed-sends"


def router(
    store: Callable[[], Store], dispatcher: Dispatcher, keys: StoredKeys, sessions: Sessions
) -> APIRouter:
    """The page's routes."""
    page = APIRouter(include_in_schema=False)
    failures, kept_status = job_failures(store), job_history(store)  # as GET /v1/messages/{id}

    def who(request: Request) -> tuple[Caller | None, str | None]:
        """The caller and its session cookie (None for a bearer key)."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            caller, cookie = keys.check(header[7:].strip()), None
        else:
            cookie = request.cookies.get(SESSION_COOKIE)
            key_id = sessions.key_id(cookie)
            caller = keys.by_id(key_id) if key_id is not None else None
            if caller is None:
                cookie = None
        request.state.caller = caller  # the request log names who it was
        return caller, cookie

    async def form(request: Request) -> dict[str, str]:
        body = await read_body(request, FORM_LIMIT)
        return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}

    async def send_form(request: Request) -> tuple[dict[str, str], Caller] | Response:
        """A form posted by a signed-in caller that may send, its CSRF token checked; or the
        page that says why not."""
        fields = await form(request)
        caller, cookie = await run_in_threadpool(who, request)
        if caller is None:
            return render("message.html", 401, title="Signed out", text="Sign in again.")
        if cookie is not None and not sessions.csrf_ok(cookie, fields.get("csrf")):
            return render("message.html", 403, title="Expired form", text="Reload the page.")
        if "send" not in caller.scopes:
            return render("message.html", 403, title="Not allowed", text="This key cannot send.")
        return fields, caller

    def signed_in(request: Request) -> tuple[Caller, str | None] | Response:
        """The caller with the ``read`` scope and its session cookie (None for a bearer key),
        or the answer that sends it to sign in first."""
        caller, cookie = who(request)
        if caller is None:
            return RedirectResponse(
                "/login?" + urlencode({"next": str(request.url.path) + "?" + request.url.query}),
                status_code=303,
                headers=HEADERS,
            )
        if "read" not in caller.scopes:
            return render("message.html", 403, title="Not allowed", text="This key cannot read.")
        return caller, cookie

    @page.get("/login")
    def login_form(next: str | None = None) -> HTMLResponse:
        return render("login.html", next=_safe_next(next))

    @page.post("/login")
    async def login(request: Request) -> Response:
        fields = await form(request)
        target = _safe_next(fields.get("next"))
        caller = await run_in_threadpool(keys.check, fields.get("api_key", "").strip())
        if caller is None or "read" not in caller.scopes:
            log.warning("page_login_refused")
            error = "That key is unknown, revoked, or lacks the read scope."
            return render("login.html", status=401, next=target, error=error)
        response = RedirectResponse(target, status_code=303, headers=HEADERS)
        response.set_cookie(
            SESSION_COOKIE,
            sessions.issue(caller.key_id),
            max_age=SESSION_TTL,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        log.info("page_login", caller=caller.name)
        return response

    @page.post("/logout")
    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303, headers=HEADERS)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @page.get("/failed-sends")
    def failed_sends(
        request: Request,
        owner: str | None = None,
        kind: str | None = None,
        recipient: str | None = None,
        cursor: int | None = None,
        resent: int | None = None,
        allowed: str | None = None,
    ) -> Response:
        checked = signed_in(request)
        if isinstance(checked, Response):
            return checked
        caller, cookie = checked
        # a key for one owner shows that owner's only, whatever the address asks for
        owner = caller.owner or (owner or "").strip() or None
        context: dict[str, Any] = {
            "owner": owner,
            "owner_fixed": caller.owner is not None,
            "kind": kind or "",
            "recipient": (recipient or "").strip(),
            "kinds": FAILED_KINDS,
            "caller": caller,
            "csrf": sessions.csrf(cookie) if cookie else "",
            "can_send": "send" in caller.scopes,
            "rows": [],
            "next_cursor": None,
            "flash": None,
        }
        if owner is None:
            return render("failed_sends.html", **context)
        with store().session() as session:
            result = repo.list_failed_sends(
                session,
                owner,
                kind=kind if kind in FAILED_KINDS else None,
                recipient=context["recipient"] or None,
                cursor=cursor,
                limit=PAGE_SIZE,
            )
            shown = {r.recipient.lower() for r in result.items}
            blocked = set(repo.suppressed(session, owner, shown, operator_wide=False))
            kept = repo.kept_jobs(session, owner, (r.job_id for r in result.items))
            context["rows"] = [
                row_view(r, r.recipient.lower() in blocked, r.job_id in kept) for r in result.items
            ]
            if result.next_cursor:
                query = {"owner": owner, "cursor": result.next_cursor}
                query |= {k: v for k, v in (("kind", kind), ("recipient", recipient)) if v}
                context["next_cursor"] = "/failed-sends?" + urlencode(query)
            done = repo.get_failed_send(session, resent) if resent else None
            if done is not None and done.owner == owner and done.resend_job_id:
                context["flash"] = {"recipient": done.recipient, "job": done.resend_job_id}
            # only an address of this page's failures: the address bar cannot put words there
            if allowed and allowed.lower() in shown - blocked:
                context["flash"] = {"recipient": allowed, "allowed": True}
        return render("failed_sends.html", **context)

    @page.post("/failed-sends/{failed_id}/resend")
    async def resend(request: Request, failed_id: int) -> Response:
        checked = await send_form(request)
        if isinstance(checked, Response):
            return checked
        fields, caller = checked
        try:
            await run_in_threadpool(resend_row, store(), dispatcher, failed_id, caller)
        except HTTPException as exc:
            return render("message.html", exc.status_code, title="Cannot resend", text=exc.detail)
        query = {"owner": fields.get("owner", ""), "resent": failed_id}
        return RedirectResponse(
            "/failed-sends?" + urlencode(query), status_code=303, headers=HEADERS
        )

    @page.post("/failed-sends/unsuppress")
    async def unsuppress(request: Request) -> Response:
        """Take a recipient off the owner's suppression list: it can be sent to again."""
        checked = await send_form(request)
        if isinstance(checked, Response):
            return checked
        fields, caller = checked
        owner, address = fields.get("owner", ""), fields.get("address", "")
        try:
            await run_in_threadpool(lift, store(), caller, owner, address)
        except HTTPException as exc:
            return render(
                "message.html", exc.status_code, title="Cannot allow again", text=exc.detail
            )
        query = {"owner": owner, "allowed": address}
        return RedirectResponse(
            "/failed-sends?" + urlencode(query), status_code=303, headers=HEADERS
        )

    @page.get("/messages")
    def messages(
        request: Request,
        owner: str | None = None,
        state: str | None = None,
        recipient: str | None = None,
        cursor: int | None = None,
    ) -> Response:
        """An owner's sent history: every job's outcome, newest first."""
        checked = signed_in(request)
        if isinstance(checked, Response):
            return checked
        caller, _ = checked
        owner = caller.owner or (owner or "").strip() or None
        try:
            state = check_state(state)
        except Invalid:
            state = None
        context: dict[str, Any] = {
            "section": "messages",
            "owner": owner,
            "owner_fixed": caller.owner is not None,
            "state": state or "",
            "states": sorted(FINAL),
            "recipient": (recipient or "").strip(),
            "caller": caller,
            "rows": [],
            "next_cursor": None,
        }
        if owner is not None:
            with store().session() as session:
                found = query.list_messages(
                    session,
                    owner,
                    recipient=context["recipient"] or None,
                    state=state,
                    cursor=cursor,
                    limit=PAGE_SIZE,
                )
            context["rows"] = [message_view(m) for m in found.items]
            if found.next_cursor:
                more = {"owner": owner, "cursor": found.next_cursor}
                more |= {k: v for k, v in (("state", state), ("recipient", recipient)) if v}
                context["next_cursor"] = "/messages?" + urlencode(more)
        return render("messages.html", **context)

    @page.get("/messages/{job_id}")
    def message(request: Request, job_id: uuid.UUID) -> Response:
        """One job: its state now (or its outcome from the history), and its Failed Sends."""
        checked = signed_in(request)
        if isinstance(checked, Response):
            return checked
        caller, _ = checked
        try:
            status = message_status(dispatcher, failures, str(job_id), caller, kept_status)
        except HTTPException:
            return render("message.html", 404, title="Unknown job", text=f"No job {job_id}.")
        shown = status.model_dump()
        for name in ("enqueued_at", "updated_at", "next_attempt_at"):
            shown[name] = _when(shown[name])
        shown["channel"] = TITLES.get(status.channel or "", status.channel)
        return render("job.html", section="messages", caller=caller, job=shown)

    return page
