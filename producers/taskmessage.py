"""A delivery task's message on kombu's Redis transport, made from one that kombu made.

A ``send()`` writes one task message, with its job's queued state, in one script
(``Publisher.record_with_task``). Made by Celery and kombu per call (``create_task_message``,
then ``Producer.publish`` through the Redis channel, captured), the message cost ~65 µs of the
call's ~320 µs of CPU. Two messages of the same task and lane differ only in the task's id
(headers ``id`` and ``root_id``, property ``correlation_id``), what Flower shows of its arguments
(``argsrepr``), the body, and kombu's ``delivery_tag``. So a publisher keeps the first message
kombu makes for each task and lane as a :class:`Template` and makes the next ones from it, with
the task-sent event Celery would have buffered (~10 µs). A template is kept only when it makes
its own message again, byte for byte, from that message's values: a Celery or kombu that shapes
its messages otherwise (another field that varies, another serializer, a key prefix) is never
imitated; the publisher goes on capturing kombu's messages instead.

On RabbitMQ the same holds of the message kombu hands to py-amqp (:class:`AmqpTemplate`): its
properties differ from one task to the next only in the same values. A publisher there keeps
the first one for each lane and queue and publishes the next ones straight through py-amqp,
with their confirms: Celery's message making, kombu's publish and its producer pool cost ~40%
of a ``send()``'s CPU on RabbitMQ.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import amqp
from kombu.serialization import dumps as serialize
from kombu.transport import redis as kombu_redis
from kombu.utils.uuid import uuid


@dataclass(frozen=True)
class Made:
    """What Celery made for one task message: its id, argsrepr, args and body's last part
    (``embed``), content type and serializer, and the task-sent event's fields (None: no
    event)."""

    task_id: str
    argsrepr: str
    args: tuple[Any, ...]
    embed: Any
    serializer: str
    sent_event: dict[str, Any] | None


@dataclass(frozen=True)
class Template:
    """One task message as kombu pushed it (the list, the message), and its task-sent event."""

    key: str
    message: dict[str, Any]
    embed: Any
    serializer: str
    event: dict[str, Any] | None

    @classmethod
    def of(cls, commands: Sequence[tuple[Any, ...]], made: Made) -> Template | None:
        """A template from kombu's captured commands for ``made``, or None when they are not
        one ``LPUSH`` of a message this module makes again exactly."""
        if len(commands) != 1 or commands[0][0] != "lpush" or len(commands[0]) != 3:
            return None
        if not _event_made_again(made):
            return None
        _, key, payload = commands[0]
        if not isinstance(key, str) or not isinstance(payload, str):
            return None
        try:
            message = json.loads(payload)
            tag = message["properties"]["delivery_tag"]
        except (ValueError, KeyError, TypeError):
            return None
        if not _serializer_makes(
            made.serializer, message.get("content-type"), message.get("content-encoding")
        ):
            return None  # the body is not what this serializer makes
        template = cls(key, message, made.embed, made.serializer, made.sent_event)
        try:
            again = template.command(made.task_id, made.argsrepr, made.args, tag)
        except (KeyError, TypeError, ValueError):
            return None
        if again[2] != payload:
            return None
        # kept without the first job's content: each message brings its own body
        return replace(template, message={**message, "body": ""})

    def command(
        self,
        task_id: str,
        argsrepr: str,
        args: tuple[Any, ...],
        delivery_tag: str | None = None,
    ) -> tuple[str, str, str]:
        """The ``LPUSH`` of this task's message with its own id, argsrepr and args."""
        base = self.message
        _, _, body = serialize((args, {}, self.embed), serializer=self.serializer)
        headers = {**base["headers"], "id": task_id, "root_id": task_id, "argsrepr": argsrepr}
        properties = {
            **base["properties"],
            "correlation_id": task_id,
            "delivery_tag": delivery_tag or uuid(),
        }
        message = {**base, "body": body, "headers": headers, "properties": properties}
        # the envelope encoded as kombu's Redis transport encodes it (its module's function,
        # looked up at each call: config/celery.py puts orjson there)
        encode = kombu_redis.dumps  # type: ignore[attr-defined]  # (not in kombu's stubs)
        return ("lpush", self.key, encode(message))

    def sent_event(self, task_id: str, argsrepr: str) -> dict[str, Any] | None:
        """The task-sent event's fields for this task (None: Celery sends none)."""
        return _sent_event(self.event, task_id, argsrepr)


@dataclass(frozen=True)
class AmqpTemplate:
    """One task message as kombu handed it to py-amqp (its properties, the publish's arguments:
    exchange, routing key...), and its task-sent event."""

    properties: dict[str, Any]
    route: dict[str, Any]
    embed: Any
    serializer: str
    event: dict[str, Any] | None

    @classmethod
    def of(
        cls, published: Sequence[tuple[amqp.Message, dict[str, Any]]], made: Made
    ) -> AmqpTemplate | None:
        """A template from what kombu published for ``made`` (message, keyword arguments), or
        None when it is not one message this class makes again exactly."""
        if len(published) != 1 or not _event_made_again(made):
            return None
        message, route = published[0]
        properties = message.properties
        if not isinstance(properties.get("application_headers"), dict):
            return None
        if not _serializer_makes(
            made.serializer, properties.get("content_type"), properties.get("content_encoding")
        ):
            return None  # the body is not what this serializer makes
        template = cls(dict(properties), dict(route), made.embed, made.serializer, made.sent_event)
        try:
            again = template.message(made.task_id, made.argsrepr, made.args)
        except (KeyError, TypeError, ValueError):
            return None
        if again.properties != properties or again.body != message.body:
            return None
        return template

    def message(self, task_id: str, argsrepr: str, args: tuple[Any, ...]) -> amqp.Message:
        """This task's message with its own id, argsrepr and args."""
        _, _, body = serialize((args, {}, self.embed), serializer=self.serializer)
        base = self.properties
        headers = {
            **base["application_headers"],
            "id": task_id,
            "root_id": task_id,
            "argsrepr": argsrepr,
        }
        return amqp.Message(
            body, **{**base, "correlation_id": task_id, "application_headers": headers}
        )

    def sent_event(self, task_id: str, argsrepr: str) -> dict[str, Any] | None:
        """The task-sent event's fields for this task (None: Celery sends none)."""
        return _sent_event(self.event, task_id, argsrepr)


def _serializer_makes(serializer: str, content_type: Any, encoding: Any) -> bool:
    """Whether ``serializer`` makes bodies of this content type and encoding."""
    made_type, made_encoding, _ = serialize((), serializer=serializer)
    return (made_type, made_encoding) == (content_type, encoding)


def _event_made_again(made: Made) -> bool:
    """Whether ``made``'s task-sent event (if any) varies only in the fields made again here."""
    event = made.sent_event
    return event is None or (
        event.get("uuid") == made.task_id
        and event.get("root_id") == made.task_id
        and event.get("args") == made.argsrepr
    )


def _sent_event(event: dict[str, Any] | None, task_id: str, argsrepr: str) -> dict[str, Any] | None:
    if event is None:
        return None
    return {**event, "uuid": task_id, "root_id": task_id, "args": argsrepr}
