"""The small pages of links that carry their own authority (unsubscribe, address confirmation,
the OAuth callback): one template, no scripts, not indexed."""

from __future__ import annotations

import html

from fastapi.responses import HTMLResponse

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}
button{{font:inherit;padding:.6rem 1.2rem;width:100%}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A page whose ``body`` is HTML already (escape what it quotes)."""
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status)


def text_page(title: str, text: str, status: int = 200, extra: str = "") -> HTMLResponse:
    """A page of one paragraph of plain ``text``, then ``extra`` HTML (a form)."""
    return page(title, f"<p>{html.escape(text)}</p>{extra}", status)
