"""Read Celery task messages straight off kombu's Redis lists, as the worker would decode them."""

from __future__ import annotations

import base64
import json
from typing import Any


def task_body(raw: bytes | str | dict[str, Any]) -> list[Any]:
    """``[args, kwargs, embed]`` of one message (kombu's envelope: the body is plain JSON text,
    or base64 where the message's ``body_encoding`` says so)."""
    envelope = raw if isinstance(raw, dict) else json.loads(raw)
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    decoded: list[Any] = json.loads(body)
    return decoded


def lanes(queue: str) -> list[str]:
    """kombu's Redis lists of a queue: the urgent lane (priority 0, the queue's own name), then
    the bulk lane (priority 9) that batches are published on (config/celery.py)."""
    return [queue, f"{queue}\x06\x169"]


def depth(client: Any, queue: str) -> int:
    """Messages waiting on a queue, both lanes."""
    return sum(int(client.llen(name)) for name in lanes(queue))


def raw_messages(client: Any, queue: str) -> list[Any]:
    """Every message waiting on a queue (both lanes), as kombu stored it."""
    return [raw for name in lanes(queue) for raw in client.lrange(name, 0, -1)]
