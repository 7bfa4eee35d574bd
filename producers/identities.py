"""Who may send as what on MSC (``MAILDISPATCH_REQUIRE_VERIFIED_IDENTITIES``): a job's identity
must be at a domain its owner verified (or a subdomain of one), or an address its owner
confirmed through the link mailed to it; the operator's own domain always may.

The verified domains and confirmed addresses are mirrored into Redis (``config.keys.SENDERS``)
by the worker side (worker/domains/); one ``SMISMEMBER`` answers a whole chunk of jobs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import redis

from config import keys
from producers.job import SendJob


def _candidates(job: SendJob) -> list[str]:
    address = job.identity.address.lower()
    domain = address.rpartition("@")[2]
    if not domain.isascii():
        with contextlib.suppress(UnicodeError):  # not encodable: only the address can match
            domain = domain.encode("idna").decode()
    labels = domain.split(".")
    parents = [".".join(labels[i:]) for i in range(len(labels) - 1)]
    return [keys.sender(job.owner, address)] + [keys.sender(job.owner, "@" + d) for d in parents]


def unverified(client: redis.Redis, jobs: Sequence[SendJob], operator_domain: str) -> list[int]:
    """The positions of MSC jobs whose identity their owner may not send as."""
    checked: list[tuple[int, list[str]]] = []
    operator = operator_domain.lower()
    for i, job in enumerate(jobs):
        if str(job.channel) != "msc":
            continue
        domain = job.identity.address.rpartition("@")[2].lower()
        if domain == operator or domain.endswith("." + operator):
            continue
        checked.append((i, _candidates(job)))
    if not checked:
        return []
    members = [m for _, found in checked for m in found]
    present = iter(client.smismember(keys.SENDERS, members))
    refused = []
    for i, found in checked:
        if not any([next(present) for _ in found]):
            refused.append(i)
    return refused
