"""The full HTTP API: the intake of ``worker/api/`` plus the store-backed parts.

``maildispatch api`` serves it; ``uvicorn --factory worker.api.app:create_app`` works too.
``python -m worker.api.app > docs/openapi.json`` regenerates the checked-in OpenAPI document.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text

from config.settings import Settings, get_settings
from producers.client import Dispatcher
from worker.api import (
    Extensions,
    accounts,
    domains,
    events,
    failed,
    history,
    page,
    suppressions,
    unsubscribe,
    webhooks,
)
from worker.api import create_app as create_intake
from worker.api.auth import Sessions, StoredKeys
from worker.api.collector import DeliveryCollector
from worker.store import Store, open_store


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API with API keys, Failed Sends (JSON and page), metrics and the database check.

    Nothing is connected until the first request; the store is migrated when first opened.
    """
    settings = settings or get_settings()
    secret = settings.require_secret_key()
    url = settings.database_url

    def store() -> Store:
        return open_store(url)

    def database() -> None:
        with store().engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    dispatcher = Dispatcher(settings)
    keys = StoredKeys(store)
    extensions = Extensions(
        keys=keys,
        routers=(
            failed.router(store, dispatcher),
            history.router(store),
            suppressions.router(store),
            events.router(settings),
            unsubscribe.router(store, dispatcher, settings),
            webhooks.router(store, settings),
            accounts.router(store, dispatcher, settings),
            domains.router(store, dispatcher, settings),
            page.router(store, dispatcher, keys, Sessions(secret)),
        ),
        health={"database": database},
        collectors=(DeliveryCollector(settings, store),),
        job_failures=failed.job_failures(store),
        job_history=history.job_history(store),
    )
    return create_intake(settings, extensions, dispatcher)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the full API (independent of the deployment's settings)."""
    # a placeholder key: the document does not depend on it, and nothing is signed with it
    settings = Settings(secret_key="openapi-" + "0" * 32, _env_file=None)
    return create_app(settings).openapi()


if __name__ == "__main__":
    print(json.dumps(openapi_document(), indent=2, sort_keys=True))
