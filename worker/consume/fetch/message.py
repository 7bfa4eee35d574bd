"""A task message as a fetcher took it: headers, priority and decoded arguments."""

from __future__ import annotations

import base64
from typing import Any

import orjson


class Fetched:
    """A delivery task message held by a fetcher until it is finished."""

    __slots__ = ("headers", "jobs", "key", "payload", "priority", "raw", "tag")

    def __init__(
        self, tag: Any, headers: dict[str, Any], priority: Any, key: str, payload: Any, raw: bytes
    ) -> None:
        #: the fetcher's handle of the message (its delivery tag)
        self.tag = tag
        self.headers = headers
        self.priority = priority
        #: where it came from (the list or queue it goes back to)
        self.key = key
        self.payload = payload
        self.raw = raw
        args, _ = arguments(payload)
        jobs = args[0] if isinstance(args, list) and len(args) == 1 else None
        #: how many jobs it carries (1 for a message the stream will refuse)
        self.jobs = len(jobs) if isinstance(jobs, list) and jobs else 1


def decode_body(body: str | bytes, content_type: Any, encoding: Any = None) -> Any:
    """A task message's body (JSON, the only serializer maildispatch accepts), decoded."""
    if encoding == "base64":
        body = base64.b64decode(body)
    if content_type not in (None, "application/json"):
        raise ValueError(f"unsupported content type {content_type!r}")
    return orjson.loads(body)


def arguments(payload: Any) -> tuple[Any, Any]:
    """(args, kwargs) of a task message of protocol 2 (a list) or 1 (a dict)."""
    if isinstance(payload, list | tuple) and len(payload) >= 2:
        return payload[0], payload[1]
    if isinstance(payload, dict):
        return payload.get("args"), payload.get("kwargs")
    return None, None
