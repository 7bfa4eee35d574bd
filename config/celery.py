"""Celery configuration: queues and routes side by side, JSON only, and the reliability options."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from config.channels import CHANNELS as CHANNELS  # re-exported: routing reads in one screen
from config.channels import DEFAULT_CHANNEL
from config.settings import Settings

#: task name -> queue; the one routing table, read by producers and workers alike
DELIVER_TASK = {channel: f"maildispatch.deliver.{channel}" for channel in CHANNELS}
BOUNCE_TASK = "maildispatch.bounces.ingest"
#: one lane of a webhook endpoint delivered (worker/webhooks/deliver.py)
WEBHOOK_TASK = "maildispatch.webhooks.lane"
QUEUE = {channel: f"mail.{channel}" for channel in CHANNELS} | {
    "bounces": "mail.bounces",
    "events": "mail.events",
}
#: on RabbitMQ, a delivery message of more than BIG_BATCH jobs goes to its channel's batch queue,
#: which a worker process consumes with a prefetch of a couple of messages (worker/consume/stream.py):
#: RabbitMQ hands every ready message, up to the prefetch, to the first consumer that has room,
#: whatever its jobs, so one queue with the prefetch single sends need (256 messages) gave a
#: backlog of batches to whichever process subscribed first, and put a single send behind it.
#: Redis needs none: its fetcher takes batches by jobs held, urgent lists first
BATCH_QUEUE = {channel: f"mail.{channel}.batches" for channel in CHANNELS}
BIG_BATCH = 32
#: every queue's arguments on RabbitMQ: durable quorum queues
QUEUE_ARGUMENTS = {"x-queue-type": "quorum"}
ROUTES = {DELIVER_TASK[c]: {"queue": QUEUE[c]} for c in CHANNELS} | {
    BOUNCE_TASK: {"queue": QUEUE["bounces"]},
    WEBHOOK_TASK: {"queue": QUEUE["events"]},
}

#: kombu's Redis transport keeps each priority of a queue in a list of its own and polls
#: priority 0 first: a call that enqueues one job (``send()``, ``POST /v1/messages``: a user
#: waiting for their mail) goes with 0, the urgent lane; batches, retries and scheduled jobs with
#: 9, the bulk lane. A worker also lets urgent jobs through its gate first (worker/consume/gate.py).
PRIORITY_URGENT = 0
PRIORITY_BULK = 9

#: RabbitMQ orders priorities the other way, a higher number first: quorum queues since
#: RabbitMQ 4.0 know two, "high" above 4 and "normal", and deliver two high for one normal
#: (3.x quorum queues ignore priorities). The lanes as published there, and read back by the
#: worker's consumer (worker/consume/fetch/amqp.py).
AMQP_URGENT = 9
AMQP_BULK = 0


def amqp_priority(lane: int) -> int:
    """The AMQP priority a message of this lane (``PRIORITY_*``) is published with."""
    return AMQP_URGENT if lane == PRIORITY_URGENT else AMQP_BULK


def lane_of_amqp(priority: int | None) -> int:
    """The lane of a message RabbitMQ delivered with this priority (none: bulk)."""
    return PRIORITY_URGENT if priority is not None and priority > 4 else PRIORITY_BULK


def is_amqp(broker_url: str) -> bool:
    """Whether the broker is RabbitMQ (an AMQP 0.9.1 URL, as kombu spells them)."""
    return broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))


def transport_options(settings: Settings, amqp: bool) -> dict[str, Any]:
    """Broker options: publisher confirms on RabbitMQ, a short visibility timeout on Redis."""
    if amqp:
        # a publish returns once RabbitMQ has the message: an accepted job is on durable storage
        return {"confirm_publish": True}
    # Redis redelivers a message not acked within the visibility timeout. Nothing waits in the
    # broker (retries live in the schedule, started batches come back through their lease: see
    # worker/jobs/inflight.py), so it only has to outlast a batch's run; a duplicate copy is harmless
    # (claims). Sweep for such messages often enough that the timeout is what decides.
    sweep = max(1, min(10, int(settings.visibility_timeout / 4)))
    return {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": sweep,
        "unacked_restore_throttle": 1,
        # the task body (JSON text already) goes into kombu's JSON envelope as a string instead
        # of base64: a third fewer bytes per queued job, no encode/decode of ~250 KB per batch.
        # Each message names its own encoding, so base64 messages already queued still decode.
        "body_encoding": None,
    }


def use_orjson() -> None:
    """kombu's ``json`` serializer (``application/json``) encoded and decoded by orjson.

    The same plain JSON on the wire (non-Python producers, Flower), several times faster than
    the standard library on a batch of 100 jobs (~250 KB), which producer and worker both
    handle once per batch. What orjson does not know goes through kombu's own encoder (its
    ``default``, and the whole message for integers beyond 64 bits); a message carrying kombu's
    ``__type__`` markers (datetime, Decimal, bytes...) is decoded by kombu, which restores them.
    """
    import orjson
    from kombu.serialization import register
    from kombu.utils import json as kombu_json

    fallback = kombu_json.JSONEncoder().default
    # as kombu: int keys become strings, datetimes go through kombu's encoder (typed markers).
    # Unlike kombu, a UUID is sent as a plain string, and integers beyond 64 bits decode as
    # floats: maildispatch's messages carry neither (jobs are validated JSON-native data).
    options = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME

    def dumps(obj: Any) -> str:
        try:
            return orjson.dumps(obj, default=fallback, option=options).decode()
        except orjson.JSONEncodeError:  # an integer beyond 64 bits: kombu's own way
            return str(kombu_json.dumps(obj))

    def loads(data: Any) -> Any:
        if not isinstance(data, bytes | str):
            data = bytes(data)  # memoryview, bytearray
        marker: Any = b'"__type__"' if isinstance(data, bytes) else '"__type__"'
        if marker in data:
            return kombu_json.loads(data)
        return orjson.loads(data)

    register("json", dumps, loads, content_type="application/json", content_encoding="utf-8")
    # kombu's Redis transport wraps each message (its body, ~210 KB for a batch) in a
    # JSON envelope of its own, encoded by kombu.utils.json whatever the serializer: when it is
    # published, again for the unacked copy the worker keeps, decoded when it is received. The
    # same functions there (the module's own names, looked up at each call).
    from kombu.transport import redis as kombu_redis

    if callable(getattr(kombu_redis, "dumps", None)) and callable(
        getattr(kombu_redis, "loads", None)
    ):
        setattr(kombu_redis, "dumps", dumps)  # noqa: B010  (not in kombu's stubs)
        setattr(kombu_redis, "loads", loads)  # noqa: B010


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for producers and workers (identical on both sides)."""
    exchange = Exchange("maildispatch", type="direct")
    amqp = is_amqp(settings.broker_url)
    queue_args = QUEUE_ARGUMENTS if amqp else None
    names = [*QUEUE.values(), *(BATCH_QUEUE.values() if amqp else ())]
    queues = [Queue(name, exchange, routing_key=name, queue_arguments=queue_args) for name in names]
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options(settings, amqp),
        # RabbitMQ quorum queues have no global QoS: Celery then sets prefetch per consumer
        "worker_detect_quorum_queues": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_queues": queues,
        "task_default_exchange": "maildispatch",
        "task_default_queue": QUEUE[DEFAULT_CHANNEL],
        "task_routes": ROUTES,
        "task_ignore_result": True,
        "result_backend": None,
        # nothing lost: ack after the task ran, redeliver when the worker process died
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        # a delivery worker holds this many task messages at once and delivers their jobs together
        # (worker/consume/stream.py): in one process, so the solo pool; `maildispatch worker` starts one
        # such process per core. The bounces line asks for prefork and prefetch 1 itself.
        "worker_pool": "solo",
        "worker_prefetch_multiplier": settings.worker_prefetch,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Flower: every task visible with its name, retries and failures
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "broker_pool_limit": 10,
    }


def make_celery(settings: Settings, name: str = "maildispatch") -> Celery:
    """A Celery app configured for maildispatch: producers and workers build theirs here."""
    use_orjson()
    app = Celery(name, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
