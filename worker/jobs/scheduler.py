"""The durable scheduler: publishes jobs whose retry (or ``send_at``) time has come.

Waiting jobs live in a Redis sorted set, not in Celery countdowns: Redis' visibility timeout
would redeliver a long countdown early and repeatedly (celery#2599). Several schedulers may run;
each takes due jobs under a short lease, so a crashed one's share comes back after it.
The same loop reaps in-flight batches whose worker died (worker/jobs/inflight.py), fans events
out to webhook endpoints (worker/webhooks/outbox.py) and writes the message history
(worker/history/record.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import structlog

from config import events, keys
from config.celery import QUEUE, WEBHOOK_TASK
from config.redisconn import AsyncState, ReplicaWait, connect, connect_async
from config.settings import Settings
from producers.client import Dispatcher
from worker.history.record import HistoryWriter
from worker.jobs.inflight import reap
from worker.jobs.lost import record_lost
from worker.jobs.state import JobStates
from worker.store import Store, hosts, open_store
from worker.webhooks.outbox import Fanout

log = structlog.get_logger("maildispatch.scheduler")

#: seconds between two trims of the event streams by one scheduler
TRIM_EVERY = 1.0


async def tick(
    states: JobStates,
    dispatcher: Dispatcher,
    limit: int = 1000,
    store: Callable[[], Store] | None = None,
) -> int:
    """Publish every job due now (in batches); returns how many were published.

    A due job whose payload is gone (and that was not cancelled) becomes a Failed Send.
    """
    due = await states.take_due(limit=limit)
    if not due:
        return 0
    wires = [w for _, w in due if w is not None]
    missing = [i for i, w in due if w is None]
    if missing:  # cancelled while this tick took it (the cancel drops the payload), or lost
        lost = await states.not_cancelled(missing)
        if lost:
            # opened on first use (open_store keeps one per URL): rare, and a scheduler starts
            # without its database
            opener = store or (lambda: open_store(dispatcher.settings.database_url))
            await record_lost(states.redis, opener, lost, states.hot_ttl, states.events_retention)
    if wires:
        await asyncio.to_thread(dispatcher.publish, wires)
    await states.published([i for i, _ in due])
    log.info("scheduled_published", count=len(wires))
    return len(wires)


async def purge_if_due(client: AsyncState, settings: Settings) -> bool:
    """Run the retention purge unless another scheduler of the fleet did within the interval."""
    lease = max(int(settings.purge_interval), 1)
    if not await client.set(keys.PURGE_LOCK, os.getpid(), nx=True, ex=lease):
        return False
    from worker.domains.manage import recheck
    from worker.domains.senders import mirror_all
    from worker.store.db import Store
    from worker.store.retention import purge

    def run_purge() -> dict[str, int]:
        # an engine of its own, closed after: the scheduler may run in the main process of a
        # prefork pool, whose children must not inherit open database connections
        store = Store(settings.database_url)
        try:
            done = purge(
                store,
                settings.failed_send_retention_days,
                settings.job_content_retention_days,
                settings.history_days,
            ).as_dict()
            client = connect(settings.state_redis_url)
            try:
                with store.session() as session:  # sending domains' DNS records, when due
                    done["domains_checked"] = recheck(session, settings)
                    done["senders"] = mirror_all(client, session)
            finally:
                client.close()
            return done
        finally:
            store.dispose()

    try:
        purged = await asyncio.to_thread(run_purge)
    except Exception:
        await client.delete(keys.PURGE_LOCK)  # the next scheduler's turn tries again
        raise
    log.info("retention_purged", **purged)
    return True


async def run(
    settings: Settings, stop: asyncio.Event | None = None, embedded: bool = False
) -> None:
    """Loop until ``stop`` is set (or SIGTERM/SIGINT); ``embedded``: in a delivery worker's
    process (worker/history/record.py lets a standalone scheduler write the history)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (ValueError, RuntimeError):  # not the main thread
            break
    if not embedded:  # a worker's embedded scheduler: its worker checked at start
        await asyncio.to_thread(hosts.check_and_note, settings)
    client = connect_async(settings.state_redis_url)
    states = JobStates(
        client,
        lease=settings.claim_lease,
        ttl=settings.job_ttl,
        events_retention=settings.events_retention,
        hot_ttl=settings.job_hot_ttl,
        wait=ReplicaWait.of(settings),
    )
    dispatcher = Dispatcher(settings)
    webhooks = _webhooks(settings, dispatcher)
    history = _history(settings, embedded)
    log.info("scheduler_started", interval_s=settings.scheduler_interval)
    purging: asyncio.Task[bool] | None = None
    next_purge = next_beat = next_trim = next_round = time.monotonic()
    try:
        while not stop.is_set():
            if time.monotonic() >= next_beat:  # this host is still in the fleet
                next_beat = time.monotonic() + hosts.BEAT_EVERY
                with contextlib.suppress(Exception):
                    await hosts.note(client, settings)
            if time.monotonic() >= next_trim:  # events past retention, in quiet shards too
                next_trim = time.monotonic() + TRIM_EVERY
                with contextlib.suppress(Exception):
                    await events.trim(client, settings.events_retention)
            # the retention purge runs beside the ticks: a long one does not delay due jobs
            if (purging is None or purging.done()) and time.monotonic() >= next_purge:
                next_purge = time.monotonic() + settings.purge_interval
                purging = asyncio.create_task(purge_if_due(client, settings))
                purging.add_done_callback(_purge_done)
            # due jobs, dead batches and webhook lanes every interval (at once again while
            # they find work); the history on its own rhythm between: its wake-ups during a
            # burst no longer look at the 16 schedules each time
            if time.monotonic() >= next_round:
                try:
                    published = await tick(states, dispatcher)
                    # batches whose worker died (lease not renewed): their jobs go out again
                    published += await reap(client, dispatcher)
                    # events to the webhook endpoints' lanes, a task per lane with work
                    published += await webhooks.tick(client)
                except Exception:
                    log.exception("scheduler_tick_failed")
                    published = 0
                next_round = time.monotonic() + (0 if published else settings.scheduler_interval)
            wait = next_round - time.monotonic()
            if history is not None:
                try:  # apart: a store away stops the history only
                    await history.tick(client)
                except Exception:
                    log.exception("history_tick_failed")
                wait = min(wait, history.wait_hint())  # a backlog: back after its rest
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
    finally:
        if purging is not None and not purging.done():
            purging.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await purging
        dispatcher.close()
        await client.aclose()
        log.info("scheduler_stopped")


def _webhooks(settings: Settings, dispatcher: Dispatcher) -> Fanout:
    """The webhook step of this scheduler (worker/webhooks/outbox.py)."""
    from worker.webhooks import endpoints

    def load() -> list[endpoints.Endpoint]:
        with open_store(settings.database_url).session() as session:
            return endpoints.active(session)

    def publish(lanes: list[str]) -> None:
        for lane in lanes:
            dispatcher.celery.send_task(WEBHOOK_TASK, args=(lane,), queue=QUEUE["events"])

    return Fanout(load, publish, f"{socket.gethostname()}-{os.getpid()}")


def _history(settings: Settings, embedded: bool) -> HistoryWriter | None:
    """The history step of this scheduler; None when there is no history to write
    (``MAILDISPATCH_HISTORY_DAYS=0``, or no events to write it from)."""
    if settings.history_days <= 0:
        return None
    if settings.events_retention <= 0:
        log.warning(
            "history_off", why="MAILDISPATCH_EVENTS_RETENTION=0: no events to write it from"
        )
        return None
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    return HistoryWriter(lambda: open_store(settings.database_url), consumer, embedded)


def _purge_done(task: asyncio.Task[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("retention_purge_failed", error=repr(task.exception())[:300])


class EmbeddedScheduler:
    """The scheduler loop on a daemon thread of a worker's main process.

    So that a fleet started from the Procfile's worker lines alone still publishes its retries
    and reaps dead batches; extra schedulers are harmless (due jobs are taken under a lease).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(
            target=self._main, name="maildispatch-scheduler", daemon=True
        )

    def start(self) -> None:
        """Start the loop and wait until it runs."""
        self._thread.start()
        self._started.wait(10)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await run(self.settings, self._stop, embedded=True)

        asyncio.run(main())

    def stop(self) -> None:
        """Ask the loop to stop and wait for it (a few seconds at most)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
