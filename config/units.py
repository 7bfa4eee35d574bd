"""Units in configuration text: durations ("30s", "2m", "1h", "4d")."""

from __future__ import annotations

import re

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")  # used with fullmatch
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in ``"30s"``, ``"2m"``, ``"1h"``, ``"4d"`` or a bare number of seconds."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 2m, 1h, 4d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
