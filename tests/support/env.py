"""The environment of worker processes under test, and the settings they read from it."""

from __future__ import annotations

import os
from typing import Any

from config.settings import Settings

SECRET = "test-secret-key-0123456789abcdef"


def worker_env(redis_url: str, database_url: str, relay_url: str, **extra: str) -> dict[str, str]:
    """Environment for worker processes under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    env.update(
        {
            "MAILDISPATCH_BROKER_URL": redis_url,
            "MAILDISPATCH_DATABASE_URL": database_url,
            "MAILDISPATCH_MSC_RELAYS": relay_url,
            "MAILDISPATCH_SECRET_KEY": SECRET,
            "MAILDISPATCH_MSC_DOMAIN": "mail.operator.test",
            "MAILDISPATCH_BOUNCE_DOMAIN": "bounces.operator.test",
            "MAILDISPATCH_MSC_RETRY_DELAYS": "0.3s,0.6s",
            "MAILDISPATCH_MSC_GIVE_UP_AFTER": "6s",
            "MAILDISPATCH_SCHEDULER_INTERVAL": "0.1s",
            "MAILDISPATCH_LOG_FORMAT": "json",
        }
    )
    env.update(extra)
    return env


def make_settings(env: dict[str, str], **overrides: Any) -> Settings:
    """Settings equal to what the worker processes read from ``env``."""
    fields = {
        k.removeprefix("MAILDISPATCH_").lower(): v
        for k, v in env.items()
        if k.startswith("MAILDISPATCH_")
    }
    return Settings(**(fields | overrides))
