"""A private RabbitMQ vhost for a test run, deleted afterwards with everything declared in it."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.services import need, port_open


def rabbitmqctl(*args: str) -> str:
    """Run rabbitmqctl (quietly) and return its output."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


@contextmanager
def private_vhost() -> Iterator[str]:
    """A new vhost the guest user may use (RabbitMQ on 127.0.0.1:5672 is required)."""
    need("RabbitMQ", port_open("127.0.0.1", 5672) and shutil.which("rabbitmqctl") is not None)
    name = f"maildispatch-test-{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


def amqp_url(vhost: str) -> str:
    """The broker URL of a vhost on the local RabbitMQ."""
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


def queue_counts(vhost: str, queue: str) -> tuple[int, int]:
    """(ready, unacknowledged) messages of a queue, as RabbitMQ counts them."""
    rows = json.loads(
        rabbitmqctl(
            "list_queues",
            "-p",
            vhost,
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "--formatter",
            "json",
        )
    )
    row = next(r for r in rows if r["name"] == queue)
    return int(row["messages_ready"]), int(row["messages_unacknowledged"])
