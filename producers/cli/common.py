"""What every command module shares: JSON output, refusals, a producer on the settings."""

from __future__ import annotations

import json
import sys
from typing import Any

from config.settings import get_settings


def print_json(data: Any) -> None:
    """One JSON document on stdout (``--json`` output)."""
    print(json.dumps(data, default=str, ensure_ascii=False))


def refused(exc: Exception, code: int = 2) -> int:
    """Print ``error: ...`` on stderr; returns the exit code."""
    print(f"error: {exc}", file=sys.stderr)
    return code


def make_dispatcher() -> Any:
    """A producer on this deployment's settings (the caller closes it)."""
    from producers.client import Dispatcher

    return Dispatcher(get_settings())


def failed_dict(row: Any) -> dict[str, Any]:
    """A Failed Send as the HTTP API shows it (one shape for both)."""
    from worker.failures.rows import failed_out

    shown: dict[str, Any] = failed_out(row).model_dump(mode="json")
    return shown
