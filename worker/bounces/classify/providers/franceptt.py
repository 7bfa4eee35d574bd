"""Orange, Wanadoo and La Poste (``*.orange.fr``, ``*.wanadoo.fr``, ``*.laposte.net``):
their ``OFR_``, ``OUK_`` and ``LPN`` error codes.

Data from Sisimai's ``rhost/for-franceptt.go`` (go-sisimai, BSD 2-Clause License, Copyright (C)
2014 azumakuniyuki and the sisimai development team).
"""

from __future__ import annotations

from ..reasons import Fact
from .registry import provider

FRANCEPTT: dict[str, str] = {
    "101": "blocked", "102": "blocked", "103": "blocked", "104": "toomanyconn", "105": "",
    "107": "", "108": "", "109": "", "201": "", "305": "securityerror", "401": "authfailure",
    "402": "securityerror", "403": "rejected", "405": "rejected", "415": "rejected",
    "416": "userunknown", "417": "mailboxfull", "420": "suspend", "421": "rejected", "423": "",
    "424": "", "426": "suspend", "505": "systemerror", "506": "spamdetected", "510": "blocked",
    "513": "", "514": "mesgtoobig", "517": "authfailure", "630": "policyviolation",
    "999": "blocked",
}  # fmt: skip


@provider("FrancePTT", hosts=(".laposte.net", ".orange.fr", ".wanadoo.fr"), order=60)
def franceptt(fo: Fact) -> str:
    """Return the reason for the Orange or La Poste error code in the text, or ''."""
    if not fo.diagnostic:
        return ""
    issued = fo.diagnostic.replace("_", "-").lower()
    for label in ("lpn", "lpnaaa", "ofr", "ouk"):
        idx = issued.rfind(label)
        if idx < 0:
            continue
        if label + "-" in issued:
            label += "-"
        word = issued[idx + len(label) - 1 :].split(" ", 1)[0]
        for code, reason in FRANCEPTT.items():
            if word.endswith(code):
                return reason
        break
    return "authfailure" if "spf/dns de votre nom de domaine" in issued else ""
