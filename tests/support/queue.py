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
