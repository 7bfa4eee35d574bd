"""JSON for maildispatch's own hot paths: orjson, with the standard library where orjson refuses.

One job's JSON is written several times on its way (the batch's lease record, the job's final
state, log lines); orjson does it in a fraction of the standard library's time and returns UTF-8
bytes directly (no ``ensure_ascii`` escaping: Redis's cjson and every reader take UTF-8). The
only values orjson refuses in our data are integers beyond 64 bits, which a producer's free-form
``metadata`` may hold: those go through the standard library, the same JSON text either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(obj: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """``obj`` as compact UTF-8 JSON bytes; ``default`` turns what JSON lacks into what it has."""
    try:
        return orjson.dumps(obj, default=default, option=_OPTIONS)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        return json.dumps(obj, default=default, ensure_ascii=False, separators=(",", ":")).encode()


def dumps_text(obj: Any) -> str:
    """``obj`` as compact JSON text."""
    return dumps(obj).decode()


loads = orjson.loads

__all__ = ["dumps", "dumps_text", "loads"]
