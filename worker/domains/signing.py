"""The verified domains as MSC signs with them: per domain its owner, its two DKIM keys and its
return-path domain, kept in the worker's memory.

They are read when the channel starts and again in the background every
``MAILDISPATCH_DOMAIN_REFRESH_INTERVAL`` (30 s), so the delivery path never waits on the store: a
domain verified (or failed) is used (or dropped) within that time. An identity at a subdomain of a
verified domain is signed as that domain (DMARC's relaxed alignment takes it).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog
from sqlalchemy import select

from config.settings import Settings
from worker.accounts.vault import Vault
from worker.domains.manage import VERIFIED, return_domain
from worker.message.dkim import DkimKey
from worker.store import open_store
from worker.store.models import SendingDomain

log = structlog.get_logger("maildispatch.domains")


@dataclass(frozen=True)
class DomainSigner:
    """How MSC sends mail from a verified domain."""

    owner: str
    domain: str
    return_domain: str
    keys: tuple[DkimKey, ...]  # RSA and Ed25519


def load_signers(settings: Settings) -> dict[str, DomainSigner]:
    """Every verified domain, keys decrypted (a domain whose keys do not open is left out)."""
    vault = Vault.from_settings(settings)
    found: dict[str, DomainSigner] = {}
    with open_store(settings.database_url).session() as session:
        for row in session.scalars(select(SendingDomain).where(SendingDomain.state == VERIFIED)):
            try:
                secrets = vault.open(row.owner, f"domain:{row.domain}", row.secret)
            except Exception:
                log.warning("domain_keys_unreadable", domain=row.domain)
                continue
            keys = (
                DkimKey(row.domain, f"{row.selector}r", secrets["rsa"].encode()),
                DkimKey(row.domain, f"{row.selector}e", secrets["ed25519"].encode()),
            )
            found[row.domain] = DomainSigner(
                row.owner, row.domain, return_domain(row.domain, settings), keys
            )
    return found


class VerifiedDomains:
    """The verified domains of the whole deployment, refreshed in the background."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.refresh = settings.domain_refresh_interval
        self._signers: dict[str, DomainSigner] = {}
        self._task: asyncio.Task[None] | None = None

    def load(self) -> None:
        """Read them now (the channel's start)."""
        try:
            self._signers = load_signers(self.settings)
        except Exception as exc:  # the store is down: the operator's signature until it is back
            log.warning("domains_not_loaded", error=type(exc).__name__)

    def for_identity(self, owner: str, address: str) -> DomainSigner | None:
        """The verified domain (or parent domain) of an identity, if the job's owner owns it."""
        if self._task is None:
            self._start()
        if not self._signers:
            return None
        domain = address.rpartition("@")[2].lower().rstrip(".")
        if not domain.isascii():
            try:
                domain = domain.encode("idna").decode()
            except UnicodeError:
                return None
        labels = domain.split(".")
        for i in range(len(labels) - 1):
            signer = self._signers.get(".".join(labels[i:]))
            if signer is not None:
                return signer if signer.owner == owner else None
        return None

    def _start(self) -> None:
        with contextlib.suppress(RuntimeError):  # no loop (a direct call): what was loaded stands
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.refresh)
            try:
                self._signers = await loop.run_in_executor(None, load_signers, self.settings)
            except Exception as exc:
                log.warning("domains_not_loaded", error=type(exc).__name__)

    def close(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
