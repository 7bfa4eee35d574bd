"""The ``mail.events`` task: one lane of an endpoint delivered, in order, signed.

Each event is one ``POST`` of its JSON with the Standard Webhooks headers (``webhook-id``: the
event's id, the same at every attempt; ``webhook-timestamp``; ``webhook-signature``: ``v1,`` and
an HMAC-SHA256 under the endpoint's secret, by the ``standardwebhooks`` package). A 2xx answer
takes the event off the lane, and the next one goes; anything else (an error status, a timeout,
a refused connection) leaves it at the head and the lane waits: ``MAILDISPATCH_WEBHOOK_RETRY_DELAYS``
after its first failures (5 s, 30 s, 2 min... 2 h), until the endpoint has been failing for ``MAILDISPATCH_WEBHOOK_DISABLE_AFTER``
(a day by default), when it is disabled with the reason, and its lanes are dropped (a replay
sends what it missed once it is enabled again). At least once: an event whose 2xx was lost is
sent again, with its id.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import certifi
import orjson
import structlog
from celery import Celery
from standardwebhooks.webhooks import Webhook

from config import keys
from config.celery import WEBHOOK_TASK
from config.redisconn import connect
from config.settings import Settings
from worker.accounts.vault import Vault
from worker.channels.netguard import NetworkPolicy
from worker.store import Store
from worker.webhooks import endpoints
from worker.webhooks.endpoints import Endpoint

log = structlog.get_logger("maildispatch.webhooks")

LANE_TASK = WEBHOOK_TASK
#: a lane is held by one task; renewed after every event
LEASE_MS = 60_000
#: events one task delivers before it hands the lane back (other lanes get their turn)
PER_RUN = 200
#: events read from the lane at once (and taken off it at once when delivered)
CHUNK = 20
TIMEOUT = 10.0

# KEYS: the lane's list, the set of lanes, its lease. ARGV: lane, lease token -> the lane is
# forgotten if it is empty, and the lease released if it is still this task's
_DONE = """
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
return 1
"""


class WebhookFailed(Exception):
    """The endpoint did not take the event (its answer, or why there was none)."""


class _TlsConnection(http.client.HTTPSConnection):
    """HTTPS to the address checked, with SNI and the certificate checked for the URL's host."""

    def __init__(self, address: str, port: int, host: str, context: ssl.SSLContext) -> None:
        super().__init__(address, port, timeout=TIMEOUT, context=context)
        self.server_name = host

    def connect(self) -> None:
        """TCP to the address, then TLS naming the host."""
        http.client.HTTPConnection.connect(self)
        context: ssl.SSLContext = vars(self)["_context"]
        self.sock = context.wrap_socket(self.sock, server_hostname=self.server_name)


class Pool:
    """Kept-alive connections to one checked address for one host, at most ``size`` idle."""

    def __init__(
        self, scheme: str, address: str, port: int, host: str, context: ssl.SSLContext, size: int
    ) -> None:
        self.scheme, self.address, self.port, self.host = scheme, address, port, host
        self.context = context
        self.size = size
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (True: it was used before) or a new one (False)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        if self.scheme == "https":
            return _TlsConnection(self.address, self.port, self.host, self.context), False
        return http.client.HTTPConnection(self.address, self.port, timeout=TIMEOUT), False

    def give(self, connection: http.client.HTTPConnection) -> None:
        """Keep a connection whose answer was read to its end for the next POST."""
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Close the idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class Pools:
    """Kept-alive connections per endpoint address, through the standard library's
    ``http.client``: urllib3's pool around the same calls cost ~190 µs more per POST here
    (~350 against ~160 µs, receiver included), and httpx ~2.5 times urllib3; the ``events``
    line spends most of its time there (docs/performance.md)."""

    def __init__(self, size: int = 16, ca_file: str | None = None) -> None:
        self.size = size
        self.context = ssl.create_default_context(cafile=ca_file or certifi.where())
        self._pools: dict[tuple[str, str, int, str], Pool] = {}
        self._lock = threading.Lock()

    def pool(self, scheme: str, address: str, port: int, host: str) -> Pool:
        """The pool that connects to ``address`` (checked) for ``host`` (Host, SNI, certificate)."""
        key = (scheme, address, port, host)
        with self._lock:
            found = self._pools.get(key)
            if found is None:
                found = Pool(scheme, address, port, host, self.context, self.size)
                self._pools[key] = found
            return found

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


@dataclass(frozen=True)
class Target:
    """Where an endpoint's events go for a while: the address its host resolved to, checked
    against the network policy, and the signer of its secret."""

    pool: Pool
    path: str
    authority: str
    signer: Webhook


def resolve(pools: Pools, endpoint: Endpoint, secret: str, policy: NetworkPolicy) -> Target:
    """Look the endpoint's host up and check every address it has; raises
    :class:`WebhookFailed` when one is on a network webhooks may not reach. The connection then
    goes to the address checked, not to whatever a second lookup answers (DNS rebinding); Host
    and TLS (SNI, certificate) name the host."""
    parts = urlsplit(endpoint.url)
    host = parts.hostname or ""
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
        raise WebhookFailed(f"cannot resolve {host}: {exc}") from None
    if not found or not all(policy.permits(str(info[4][0])) for info in found):
        raise WebhookFailed(f"{host} resolves to a network webhooks may not reach")
    address = str(found[0][4][0])
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(
        pool=pools.pool(parts.scheme, address, port, host),
        path=path,
        authority=parts.netloc.rpartition("@")[2],
        signer=Webhook(secret),
    )


def _meant_for(endpoint: Endpoint, event: dict[str, Any]) -> bool:
    """Whether an event on this endpoint's lane is one it receives. Lanes are named by the
    endpoint's id, which SQLite gives again once the highest one is removed: a lane the removed
    endpoint left (waiting on a retry) must reach no later endpoint, another owner's least."""
    # the event's time is written to the millisecond: one of the endpoint's first millisecond
    # (fanned out to it) is not taken for an older one
    at = datetime.fromisoformat(event["timestamp"]).timestamp() + 0.001
    return endpoint.wants(str(event["data"].get("owner", "")), event["type"], at)


def post(target: Target, body: bytes, msg_id: str) -> None:
    """One signed POST of the event ``msg_id``; raises :class:`WebhookFailed` unless the
    endpoint answered 2xx."""
    now = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": target.signer.sign(msg_id, now, body.decode()),
        "content-type": "application/json",
        "user-agent": "maildispatch-webhooks",
        "host": target.authority,
    }
    for attempt in (1, 2):
        connection, reused = target.pool.take()
        try:
            connection.request("POST", target.path, body=body, headers=headers)
            answer = connection.getresponse()
            status = answer.status
            answer.read(64 * 1024)  # what the receiver said is not kept; a huge answer is not read
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            if isinstance(exc, ConnectionError) and reused and attempt == 1:
                continue  # a kept-alive connection the endpoint had closed: once on a new one
            raise WebhookFailed(f"{type(exc).__name__}: {exc}"[:300]) from None
        if answer.isclosed():  # read to its end: the connection can carry the next POST
            target.pool.give(connection)
        else:
            answer.close()
            connection.close()
        break
    if not 200 <= status < 300:
        raise WebhookFailed(f"answered {status}")


class Deliverer:
    """What the lane task needs, once per worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = connect(settings.state_redis_url, socket_timeout=30)
        self.store = Store(settings.database_url)
        self.vault = Vault.from_settings(settings)
        self.policy = NetworkPolicy.from_settings(settings)
        self.pools = Pools(ca_file=settings.webhook_ca_file)

    def endpoint(self, endpoint_id: int) -> tuple[Endpoint, str] | None:
        """An enabled endpoint and its secret (None once removed or disabled)."""
        with self.store.session() as session:
            row = endpoints.get(session, endpoint_id)
            if row is None or row.state != endpoints.ENABLED:
                return None
            return endpoints.endpoint_of(row), endpoints.secret_of(row, self.vault)

    def run_lane(self, lane: str) -> str:
        """Deliver a lane's events in order until it is empty, fails, or PER_RUN went."""
        token = uuid.uuid4().hex
        lease = keys.webhook_lease(lane)
        if not self.redis.set(lease, token, nx=True, px=LEASE_MS):
            return "busy"  # another task has it
        try:
            found = self.endpoint(int(lane.split(":", 1)[0]))
            if found is None:
                self._drop(lane)
                return "dropped"
            endpoint, secret = found
            sent = 0
            while sent < PER_RUN:
                # a chunk at a time: the head events are read together, and taken off the lane
                # together once delivered (a task that dies in between sends them again, with
                # their ids: at least once)
                chunk: list[Any] = self.redis.lrange(keys.webhook_lane(lane), 0, CHUNK - 1)
                if not chunk:
                    return "empty"
                done, renewed = 0, time.monotonic()
                try:
                    # looked up and checked once per chunk of events, not once per event
                    target = resolve(self.pools, endpoint, secret, self.policy)
                    for body in chunk:
                        event = orjson.loads(body)
                        if _meant_for(endpoint, event):  # else a lane left by a removed endpoint
                            post(target, body, str(event["id"]))
                        done += 1
                        if time.monotonic() - renewed > LEASE_MS / 3000:  # a slow endpoint
                            self.redis.pexpire(lease, LEASE_MS)
                            renewed = time.monotonic()
                except WebhookFailed as exc:
                    self._delivered(lane, endpoint, lease, done)
                    return self._failed(lane, endpoint, str(exc))
                self._delivered(lane, endpoint, lease, done)
                sent += done
            self.redis.zadd(keys.WEBHOOK_DUE, {lane: 0})  # more: the next tick hands it out
            return "more"
        finally:
            self.redis.eval(
                _DONE, 3, keys.webhook_lane(lane), keys.WEBHOOK_LANES, lease, lane, token
            )

    def _delivered(self, lane: str, endpoint: Endpoint, lease: str, count: int) -> None:
        """Take the first ``count`` events off the lane; the endpoint is not failing."""
        if not count:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.ltrim(keys.webhook_lane(lane), count, -1)
        pipe.hdel(keys.WEBHOOK_ATTEMPTS, lane)
        pipe.hdel(keys.WEBHOOK_FAILING, str(endpoint.id))
        pipe.pexpire(lease, LEASE_MS)
        pipe.execute()

    def _failed(self, lane: str, endpoint: Endpoint, error: str) -> str:
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(keys.WEBHOOK_ATTEMPTS, lane, 1)
        pipe.hsetnx(keys.WEBHOOK_FAILING, str(endpoint.id), repr(now))
        pipe.hget(keys.WEBHOOK_FAILING, str(endpoint.id))
        failures, _, since = pipe.execute()
        first = float(since or now)
        if now - first >= self.settings.webhook_disable_after:
            stamp = datetime.fromtimestamp(first, UTC).isoformat(timespec="seconds")
            reason = f"failing since {stamp}: {error}"
            with self.store.session() as session:
                endpoints.disable(session, endpoint.id, reason)
            log.warning("webhook_disabled", endpoint=endpoint.id, reason=reason)
            self._drop(lane)
            # enabled again later, it starts a failing streak of its own (not one a day old)
            self.redis.hdel(keys.WEBHOOK_FAILING, str(endpoint.id))
            return "disabled"
        delays = self.settings.webhook_retry_delays or (60.0,)
        delay = delays[min(int(failures), len(delays)) - 1]
        self.redis.zadd(keys.WEBHOOK_DUE, {lane: now + delay})
        log.info("webhook_failed", endpoint=endpoint.id, error=error, retry_in_s=delay)
        return "retrying"

    def _drop(self, lane: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.webhook_lane(lane))
        pipe.srem(keys.WEBHOOK_LANES, lane)
        pipe.zrem(keys.WEBHOOK_DUE, lane)
        pipe.hdel(keys.WEBHOOK_ATTEMPTS, lane)
        pipe.execute()


_deliverer: list[Deliverer] = []


def register(app: Celery) -> Any:
    """The lane task on ``app`` (worker/app.py calls this)."""

    def lane(lane: str) -> str:
        if not _deliverer:
            from config.settings import get_settings

            _deliverer.append(Deliverer(get_settings()))
        return _deliverer[0].run_lane(lane)

    return app.task(name=LANE_TASK, ignore_result=True)(lane)
