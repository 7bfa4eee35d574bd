"""The HTTP application: one package for everything ``maildispatch api`` serves.

- the intake (``core.py``, ``intake.py``, ``models.py``, ``scopes.py``): ``POST /v1/messages``
  (and ``:batch``), ``GET /v1/messages/{id}``, cancel, health and ``/metrics``, around a
  :class:`~producers.client.Dispatcher`, with API keys' scopes and owners;
- the store-backed parts (``auth.py``: keys from the store and the page's session;
  ``failed.py``: Failed Sends; ``history.py``: the message history; ``suppressions.py``;
  ``events.py``, ``webhooks.py``, ``unsubscribe.py``; ``page.py``: the Failed Sends page;
  ``collector.py``: delivery metrics), plugged into the intake through :class:`Extensions` by
  ``app.py``, which assembles the full API; ``cli.py``: the ``api`` and ``api-keys`` commands.

Errors have one shape: ``{"detail": "...", "errors": [{"index"?, "field", "message"}]}``.
"""

from worker.api.core import create_app, openapi_document
from worker.api.intake import read_body
from worker.api.models import ERRORS, ErrorBody, ErrorItem, Invalid
from worker.api.scopes import Caller, Extensions, KeyChecker, check_owners, read_owner, require

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
