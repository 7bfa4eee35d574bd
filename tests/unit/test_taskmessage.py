"""Templates of task messages (producers/taskmessage.py): kept only where they make kombu's
message again exactly; then each message carries its own task's values."""

from __future__ import annotations

import json
from typing import Any

from kombu.serialization import dumps as serialize
from kombu.transport import redis as kombu_redis

from producers.taskmessage import Made, Template

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def made(task_id: str = "task-1", job_id: str = "job-1") -> Made:
    shown = f"jobs=['{job_id}'] owners=['o'] channel=msc count=1"
    event = {"uuid": task_id, "root_id": task_id, "args": shown, "queue": "mail.msc"}
    return Made(task_id, shown, ([{"id": job_id}],), EMBED, "json", event)


def pushed(
    m: Made, headers: dict[str, Any] | None = None, body: str | None = None
) -> tuple[str, str, str]:
    """An LPUSH as kombu's Redis transport makes it for ``m`` (``headers`` overriding)."""
    message = {
        "body": body if body is not None else serialize((m.args, {}, m.embed), "json")[2],
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": "maildispatch.deliver.msc",
            "id": m.task_id,
            "root_id": m.task_id,
            "argsrepr": m.argsrepr,
            "origin": "gen1@host",
        }
        | (headers or {}),
        "properties": {
            "correlation_id": m.task_id,
            "priority": 0,
            "body_encoding": None,
            "delivery_tag": "tag-1",
        },
    }
    return ("lpush", "mail.msc", kombu_redis.dumps(message))  # type: ignore[attr-defined]


def test_a_template_makes_each_task_its_own_message_and_event() -> None:
    template = Template.of([pushed(made())], made())
    assert template is not None
    other = made("task-2", "job-2")
    name, key, payload = template.command(other.task_id, other.argsrepr, other.args)
    message = json.loads(payload)
    assert (name, key) == ("lpush", "mail.msc")
    assert message["headers"]["id"] == message["headers"]["root_id"] == "task-2"
    assert message["properties"]["correlation_id"] == "task-2"
    assert message["properties"]["delivery_tag"] not in ("tag-1", None)
    assert message["headers"]["argsrepr"] == other.argsrepr
    assert json.loads(message["body"]) == [[[{"id": "job-2"}]], {}, EMBED]
    assert message["headers"]["origin"] == "gen1@host"  # what does not vary is kept
    assert template.message["body"] == ""  # the first job's content is not kept
    assert template.sent_event("task-2", other.argsrepr) == {
        "uuid": "task-2",
        "root_id": "task-2",
        "args": other.argsrepr,
        "queue": "mail.msc",
    }


def test_no_template_of_a_message_it_would_not_make_again() -> None:
    m = made()
    # a root other than the task itself (a task sent by another task)
    assert Template.of([pushed(m, {"root_id": "parent"})], m) is None
    # Flower's view made otherwise than the publisher makes it
    assert Template.of([pushed(m, {"argsrepr": "[...]"})], m) is None
    # a body serialized otherwise
    assert Template.of([pushed(m, body="gAN9cQAu")], m) is None
    # more than the push (a queue with an expiry: kombu adds PEXPIREs)
    assert Template.of([pushed(m), ("pexpire", "mail.msc", 1000)], m) is None
    assert Template.of([("publish", "chan", "{}")], m) is None
    # a task-sent event that names its task otherwise
    odd = Made(m.task_id, m.argsrepr, m.args, m.embed, m.serializer, {"uuid": "other"})
    assert Template.of([pushed(m)], odd) is None
    assert Template.of([pushed(m)], m) is not None
