"""``/u/{token}``: the one-click unsubscribe of List-Unsubscribe links (RFC 8058).

``POST`` with ``List-Unsubscribe=One-Click`` in its body (what mail clients send, and what the
confirmation page's button sends) puts the token's recipient on its owner's suppression list
with reason ``unsubscribe`` (every channel then fails mail to that person as ``suppressed``) and
writes a ``message.unsubscribed`` event; doing it again changes nothing. ``GET`` only shows a
page with that button: mail scanners fetch links, and must not unsubscribe anyone. No API key:
the token is the authority (worker/message/unsubscribe.py); an invalid one is a plain 404.
"""

from __future__ import annotations

import html
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from config.settings import Settings
from producers.client import Dispatcher
from worker.api.intake import read_body
from worker.api.pages import page as _page
from worker.failures.unsubscribes import unsubscribe
from worker.message.unsubscribe import ONE_CLICK, Unsubscribe, read_token
from worker.store import Store

#: RFC 8058's POST body is one short form field: a larger one is refused (413) unread
ONE_CLICK_BODY = 4096


def router(store: Callable[[], Store], dispatcher: Dispatcher, settings: Settings) -> APIRouter:
    """The unsubscribe routes (no API key)."""
    api = APIRouter(tags=["unsubscribe"])
    secrets = settings.verifying_keys()
    missing = _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)

    def take(who: Unsubscribe) -> None:
        unsubscribe(store(), dispatcher.redis, settings, who)

    @api.get("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
    def confirm(token: str) -> HTMLResponse:
        """The page of the link: a button, nothing changed yet."""
        who = read_token(token, secrets)
        if who is None:
            return missing
        name, value = ONE_CLICK.split("=")
        form = (
            f"<p>Stop mail from this sender to <b>{html.escape(who.recipient)}</b>?</p>"
            f'<form method="post"><input type="hidden" name="{name}" value="{value}">'
            "<button>Unsubscribe</button></form>"
        )
        return _page("Unsubscribe", form)

    @api.post("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def one_click(token: str, request: Request) -> HTMLResponse:
        """RFC 8058's POST: unsubscribes at once."""
        who = read_token(token, secrets)
        if who is None:
            return missing
        if ONE_CLICK.encode() not in await read_body(request, ONE_CLICK_BODY):
            body = "<p>A one-click unsubscribe sends List-Unsubscribe=One-Click.</p>"
            return _page("Nothing changed", body, 400)
        await run_in_threadpool(take, who)
        done = f"<p><b>{html.escape(who.recipient)}</b> will get no more mail from this sender.</p>"
        return _page("Unsubscribed", done)

    return api
