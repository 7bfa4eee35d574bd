"""The naive baseline (not the product): one Celery task per email, a new smtplib connection each.

This is the design a first attempt usually has: the task takes the email's fields, builds an
``EmailMessage``, opens an SMTP connection, sends, and quits. The worker runs with Celery's
defaults (prefork, one process per core, prefetch multiplier 4), started by the bench as
``celery -A bench.naive worker -Q bench.naive``. Broker and relay come from ``BENCH_BROKER_URL``
and ``BENCH_RELAY_PORT``.
"""

from __future__ import annotations

import os
import smtplib
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from celery import Celery

QUEUE = "bench.naive"
TASK = "bench.naive.send"


def make_app(broker_url: str) -> Celery:
    """The naive design's Celery app (the same for the bench's producer and its worker)."""
    app = Celery("naive", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=QUEUE,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    return app


app = make_app(os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/15"))


@app.task(name=TASK)
def send(mail_from: str, to: str, subject: str, text: str, message_id: str) -> None:
    """Build the message and send it over a fresh connection."""
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id
    msg.set_content(text)
    port = int(os.environ.get("BENCH_RELAY_PORT", "2525"))
    with smtplib.SMTP("127.0.0.1", port, local_hostname="naive.bench.test", timeout=60) as smtp:
        smtp.send_message(msg)


def task_args(i: int, run: str, body: str) -> list[Any]:
    """The arguments of the i-th naive task."""
    return [
        "Bench Sender <sender@acme.example>",
        f"user{i}-{run}@example.org",
        f"Your receipt number {i}",
        body,
        f"<naive-{run}-{i}@bench.test>",
    ]
