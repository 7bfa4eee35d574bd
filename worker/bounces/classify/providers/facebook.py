"""Facebook (``*.facebook.com``): its error labels (``POL-P1``, ``RCP-P1``...).

Data from Sisimai's ``rhost/for-facebook.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from .registry import provider

FACEBOOK: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("authfailure", ("POL-P7",)),
    ("blocked", ("POL-P1", "POL-P2", "POL-P3", "POL-P4", "POL-T1", "POL-T2", "POL-T3")),
    ("contenterror", ("MSG-P2",)),
    ("filtered", ("RCP-P2", "RCP-P3")),
    ("mesgtoobig", ("MSG-P1", "INT-P2")),
    ("notcompliantrfc", ("MSG-P3",)),
    ("rejected", ("DNS-P1", "DNS-P2", "DNS-T1")),
    ("requireptr", ("DNS-P3", "DNS-T2")),
    ("spamdetected", ("POL-P6",)),
    ("suspend", ("RCP-T4",)),
    ("systemerror", ("RCP-T1",)),
    ("toomanyconn", ("CON-T1", "CON-T2", "CON-T3", "CON-T4", "MSG-T1")),
    ("userunknown", ("RCP-P1", "INT-P1", "INT-P3", "INT-P4")),
    ("virusdetected", ("POL-P5",)),
)


@provider("Facebook", hosts=(".facebook.com",), order=50)
def facebook(fo: Fact) -> str:
    """Return the reason for the first error label in the text, or ''."""
    text = fo.diagnostic
    idx = text.find("-")
    if idx < 3:
        return ""
    label = text[idx - 3 : idx + 3]
    for reason, labels in FACEBOOK:
        if label in labels:
            return reason
    return ""
