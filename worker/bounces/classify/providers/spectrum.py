"""Spectrum / Charter (``charter.net``): its ``AUP#nnnn`` error numbers, alone or in ranges.

Data from Sisimai's ``rhost/for-spectrum.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from ..text import select
from .registry import provider

# (number or first of a range, last of the range or "", reason)
SPECTRUM: tuple[tuple[str, str, str], ...] = (
    ("1000", "", "blocked"), ("1010", "", "rejected"), ("1020", "1080", "rejected"),
    ("1090", "", "systemerror"), ("1100", "1150", "requireptr"), ("1160", "1190", "policyviolation"),
    ("1200", "1210", "blocked"), ("1220", "1250", "blocked"), ("1260", "", "networkerror"),
    ("1300", "1340", "toomanyconn"), ("1350", "1490", "speeding"), ("1500", "", "rejected"),
    ("1520", "", "rejected"), ("1530", "", "mesgtoobig"), ("1540", "", "speeding"),
    ("1550", "", "speeding"), ("1560", "", "policyviolation"), ("1580", "", "speeding"),
)  # fmt: skip


@provider("Spectrum", hosts=("charter.net",), order=170)
def spectrum(fo: Fact) -> str:
    """Return the reason for Spectrum's ``AUP#`` number, or ''."""
    label = select(fo.diagnostic, "AUP#", None) if fo.diagnostic else ""
    digits = ""
    for ch in label:
        if len(digits) == 4:
            break
        digits = digits + ch if ch.isdigit() else ""
    if len(digits) != 4:
        return ""
    number = int(digits)
    for low, high, reason in SPECTRUM:
        if digits == low:
            return reason
        if high and int(low) <= number <= int(high):
            return reason
    return ""
