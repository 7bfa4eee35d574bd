"""Per-process resources: one long-lived asyncio loop (in its own thread), pools and clients.

Created on first use in each worker process (after the prefork pool forked it), reused by every
task that process runs, so SMTP connections and Redis clients outlive a single task.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

from config.channels import OWNER_ACCOUNT
from config.redisconn import AsyncState, ReplicaWait, connect_async
from config.settings import Settings, get_settings
from worker.channels.registry import make_channel
from worker.consume.gate import Gate
from worker.delivery import Accounts, Delivery
from worker.jobs.state import JobStates
from worker.store import Store, open_store

T = TypeVar("T")


class Runtime:
    """The event loop and the long-lived objects of one worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="maildispatch-loop", daemon=True
        )
        self._thread.start()
        self._store: Store | None = None
        self._deliveries: dict[str, Delivery] = {}
        #: one gate for every channel this process delivers (worker/consume/gate.py)
        self.gate = Gate(settings.worker_jobs)
        self.redis: AsyncState = self.run(self._redis())
        self.states = JobStates(
            self.redis,
            lease=settings.claim_lease,
            ttl=settings.job_ttl,
            events_retention=settings.events_retention,
            hot_ttl=settings.job_hot_ttl,
            wait=ReplicaWait.of(settings),
        )

    @property
    def store(self) -> Store:
        """The Failed Sends store, opened (and upgraded) on first use, not at start: a worker
        whose database is away still starts, takes its messages and retries them."""
        if self._store is None:
            self._store = open_store(self.settings.database_url)
        return self._store

    async def _redis(self) -> AsyncState:
        # a blocking pool waits for a free connection instead of failing a burst of claims
        return connect_async(self.settings.state_redis_url, max_connections=64, blocking=True)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the process loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def delivery(self, channel: str) -> Delivery:
        """The Delivery of a channel, built on first use."""
        return self.run(self.adelivery(channel))

    async def adelivery(self, channel: str) -> Delivery:
        """The Delivery of a channel, built on first use (on the process loop)."""
        if channel not in self._deliveries:
            self._deliveries[channel] = await self._make_delivery(channel)
        return self._deliveries[channel]

    async def _make_delivery(self, channel: str) -> Delivery:
        accounts: Accounts | None = None
        if channel in OWNER_ACCOUNT:  # sent through the owner's connected account
            from worker.accounts.connected import AsyncAccounts

            accounts = AsyncAccounts(self.settings, self.store)
        return Delivery(
            self.settings,
            make_channel(channel, self.settings),
            self.states,
            self.store,
            accounts,
            gate=self.gate,
        )

    def close(self) -> None:
        """Close pools and stop the loop."""

        async def shutdown() -> None:
            for d in self._deliveries.values():
                await d.channel.close()
            await self.states.inflight.close()
            await self.redis.aclose()

        try:
            self.run(shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)


_runtime: Runtime | None = None
_pid = 0
_lock = threading.Lock()


def runtime() -> Runtime:
    """This process's runtime (a fresh one after a fork)."""
    global _runtime, _pid
    with _lock:
        if _runtime is None or _pid != os.getpid():
            _runtime = Runtime(get_settings())
            _pid = os.getpid()
            # what exists now (modules, settings, pools) lives as long as the process: keep it
            # out of the cyclic collector's full passes, which otherwise rescan all of it every
            # few thousand emails (~10% of a worker's CPU; docs/performance.md)
            gc.freeze()
        return _runtime


def shutdown_runtime() -> None:
    """Close this process's runtime, if it has one."""
    global _runtime
    with _lock:
        if _runtime is not None and _pid == os.getpid():
            _runtime.close()
        _runtime = None
