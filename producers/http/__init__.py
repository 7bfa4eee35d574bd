"""The HTTP intake: ``POST /v1/messages`` (and ``:batch``), ``GET /v1/messages/{id}``, health, metrics.

:func:`create_app` builds a FastAPI app around a :class:`~producers.client.Dispatcher`. This package
imports nothing from ``worker``: what needs the store — API keys, the Failed Sends API and page,
delivery metrics, the database health check — plugs in through :class:`Extensions`, and
``worker/web/app.py`` assembles the full API (``maildispatch api`` serves it).

Errors have one shape: ``{"detail": "...", "errors": [{"index"?, "field", "message"}]}``.
"""

from producers.http.app import create_app, openapi_document
from producers.http.auth import Caller, Extensions, KeyChecker, check_owners, read_owner, require
from producers.http.intake import read_body
from producers.http.models import ERRORS, ErrorBody, ErrorItem, Invalid

__all__ = [
    "ERRORS",
    "Caller",
    "ErrorBody",
    "ErrorItem",
    "Extensions",
    "Invalid",
    "KeyChecker",
    "check_owners",
    "create_app",
    "openapi_document",
    "read_body",
    "read_owner",
    "require",
]
