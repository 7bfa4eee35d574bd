"""Put a raw inbound message on ``mail.bounces``: the one way the server and the poller enqueue.

The message travels as base64 text inside a JSON task argument (raw mail is bytes, often not
UTF-8), next to a small envelope: where it came from and the SMTP recipients. Flower and logs
see only the source, the size and the count of recipients (``argsrepr``), never the message.

A publish either returns after the broker took the message (Redis answered the LPUSH; RabbitMQ
confirmed it) or raises :class:`BounceNotQueued` within ``MAILDISPATCH_BOUNCE_PUBLISH_TIMEOUT``:
callers answer 451 or leave the mailbox untouched, so nothing is lost.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import signals

from config.celery import BOUNCE_TASK, QUEUE, is_amqp, make_celery
from config.errors import MaildispatchError
from config.settings import Settings

__all__ = ["BounceNotQueued", "BouncePublisher", "InboundMessage", "bounce_argsrepr"]

WIRE_VERSION = 1


class BounceNotQueued(MaildispatchError):
    """The broker did not take the message in time; the caller must keep it (451, not deleted)."""

    exit_code = 75  # EX_TEMPFAIL


@dataclass(frozen=True)
class InboundMessage:
    """A raw report as received, with its SMTP envelope when it came over SMTP."""

    raw: bytes
    source: str  # "smtp" or "imap"
    rcpt_tos: tuple[str, ...] = ()
    mail_from: str = ""
    received_at: float = field(default_factory=time.time)

    def wire(self) -> dict[str, Any]:
        """The JSON task argument."""
        return {
            "v": WIRE_VERSION,
            "source": self.source,
            "mail_from": self.mail_from,
            "rcpt_tos": list(self.rcpt_tos),
            "received_at": self.received_at,
            "size": len(self.raw),
            "raw": base64.b64encode(self.raw).decode("ascii"),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> InboundMessage:
        """Decode the task argument; ValueError when it is not one."""
        try:
            raw = base64.b64decode(str(data["raw"]), validate=True)
            rcpts = data.get("rcpt_tos") or []
            return cls(
                raw=raw,
                source=str(data.get("source", "")),
                rcpt_tos=tuple(str(r) for r in rcpts),
                mail_from=str(data.get("mail_from", "")),
                received_at=float(data.get("received_at") or time.time()),
            )
        except (KeyError, TypeError, binascii.Error) as exc:
            raise ValueError(f"not a bounce payload: {type(exc).__name__}") from exc


def bounce_argsrepr(wire: Mapping[str, Any]) -> str:
    """What Flower and logs show of a bounce task: source, size and recipient count only."""
    rcpts = wire.get("rcpt_tos")
    count = len(rcpts) if isinstance(rcpts, list) else 0
    return f"bounce source={wire.get('source')} bytes={wire.get('size')} rcpts={count}"


@signals.before_task_publish.connect
def _hide_bounce(
    sender: str | None = None, body: Any = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    """Every publish of the ingest task (first one, or a retry from the worker) hides the body."""
    if headers is None or sender != BOUNCE_TASK:
        return
    args = body[0] if isinstance(body, tuple | list) and body else ()
    wire = args[0] if args and isinstance(args[0], dict) else {}
    headers["argsrepr"] = bounce_argsrepr(wire)
    headers["kwargsrepr"] = "{}"


class BouncePublisher:
    """Publishes inbound messages to ``mail.bounces`` with confirmation and a short timeout."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.bounce_publish_timeout
        self.celery = make_celery(settings, "maildispatch-bounces")
        options = dict(self.celery.conf.broker_transport_options or {})
        # fail fast instead of Celery's default of retrying a dead broker for a long time:
        # the sender (an MTA, or the mailbox) keeps the message and we are asked again later
        options |= {"max_retries": 1, "connect_retries_timeout": self.timeout}
        if is_amqp(settings.broker_url):
            options["confirm_publish"] = True  # wait for RabbitMQ's publisher confirm
        else:
            options |= {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout}
        self.celery.conf.broker_transport_options = options
        self.celery.conf.broker_connection_timeout = self.timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="bounce-publish")

    def publish(self, message: InboundMessage) -> str:
        """Enqueue and wait for the broker; returns the task id or raises BounceNotQueued."""
        future = self._pool.submit(self._send, message.wire())
        try:
            return future.result(timeout=self.timeout + 1)
        except concurrent.futures.TimeoutError as exc:
            raise BounceNotQueued("the broker did not answer in time") from exc
        except Exception as exc:
            raise BounceNotQueued(
                f"the broker refused or is unreachable: {type(exc).__name__}"
            ) from exc

    def _send(self, wire: dict[str, Any]) -> str:
        result = self.celery.send_task(
            BOUNCE_TASK,
            args=(wire,),
            queue=QUEUE["bounces"],
            retry=False,
            argsrepr=bounce_argsrepr(wire),
            kwargsrepr="{}",
        )
        return str(result.id)

    def close(self) -> None:
        """Release threads and broker connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.celery.close()


def envelope_domains(addresses: Sequence[str]) -> list[str]:
    """The domains of some addresses (what logs may show of them)."""
    return sorted({a.rpartition("@")[2].lower() for a in addresses})
