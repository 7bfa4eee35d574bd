"""Fleet-wide rate limits as configured: ``2000/24h``, ``150/1m``, ``gmail.com=50/s``.

Read by worker/jobs/pacing.py, which keeps the counts in Redis; parsed here so that a bad value
stops the process at start with the variable named.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from config.units import parse_duration

_RATE = re.compile(r"\s*(\d+)\s*/\s*(\S+)\s*")  # fullmatch: `$` would pass a final newline


@dataclass(frozen=True)
class Rate:
    """At most ``count`` messages in any ``window`` seconds."""

    count: int
    window: float

    def __str__(self) -> str:
        return f"{self.count}/{self.window:g}s"


def parse_rate(text: str) -> Rate:
    """``"150/1m"``, ``"50/s"``, ``"2000/24h"`` as a Rate."""
    match = _RATE.fullmatch(text)
    if not match:
        raise ValueError(f"not a rate: {text!r} (use e.g. 50/s, 150/1m, 2000/24h)")
    period = match.group(2)
    window = parse_duration(period if period[0].isdigit() else f"1{period}")
    count = int(match.group(1))
    if count < 1 or window <= 0:
        raise ValueError(f"not a rate: {text!r} (count and period must be positive)")
    return Rate(count, window)


def parse_rates(items: Iterable[str]) -> tuple[Rate, ...]:
    """Every rate of a list such as ``("2000/24h", "150/1m")``."""
    return tuple(parse_rate(i) for i in items)


def parse_keyed_rates(items: Iterable[str]) -> dict[str, tuple[Rate, ...]]:
    """``("gmail.com=50/s", "yahoo.com=20/s")`` as {name: rates}; a name may appear twice."""
    table: dict[str, tuple[Rate, ...]] = {}
    for item in items:
        name, sep, rate = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"not a limit: {item!r} (use e.g. gmail.com=50/s)")
        key = name.strip().lower()
        table[key] = (*table.get(key, ()), parse_rate(rate))
    return table
