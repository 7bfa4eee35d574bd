"""The web app's side of a peer baseline: enqueue the emails, report when and at what CPU cost.

Usage (environment from bench/peers.py): python -m bench.peers_app.produce --shape single|batch
--count N --tag TAG. Prints one JSON line: ``start`` (time.time() right before the first
enqueue), ``end`` (after the last) and ``cpu`` (this process's CPU seconds in between).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import django

from bench.common import BODY
from bench.peers_app import settings as peer_settings
from bench.peers_app.celery_app import app as celery_app

SENDER = "Bench Sender <sender@acme.example>"


def fields(i: int, tag: str) -> dict[str, Any]:
    """The i-th email: one recipient, ~1.7 KB of text, a Message-ID the relay counts it by."""
    return {
        "subject": f"Your receipt number {i}",
        "body": BODY,
        "to": f"user{i}-{tag}@example.org",
        "message_id": f"<peer-{tag}-{i}@bench.invalid>",
    }


def celery_email(shape: str, items: list[dict[str, Any]]) -> None:
    """Through Django's mail API with django-celery-email as EMAIL_BACKEND."""
    from django.core.mail import EmailMessage, get_connection

    def message(f: dict[str, Any], connection: Any = None) -> EmailMessage:
        return EmailMessage(
            f["subject"],
            f["body"],
            SENDER,
            [f["to"]],
            headers={"Message-ID": f["message_id"]},
            connection=connection,
        )

    if shape == "single":
        # What send_mail() does, which cannot take headers: a new backend instance and
        # send_messages([one]), so one Celery task per email
        for f in items:
            message(f).send()
    else:
        # What send_mass_mail() does: one backend, send_messages(all); the backend cuts the
        # list into tasks of CELERY_EMAIL_CHUNK_SIZE (10) emails
        connection = get_connection()
        connection.send_messages([message(f, connection) for f in items])


def post_office(shape: str, items: list[dict[str, Any]]) -> None:
    """Through post_office.mail with CELERY_ENABLED.

    Priority is left at its default, "medium" (queued): the row is saved and the email_queued
    signal sends the ``send_queued_mail`` task after the commit. "now" would deliver inside
    this process (the README suggests it only when the *email backend* is itself asynchronous),
    and send_many() refuses it.
    """
    from post_office import mail

    def kwargs(f: dict[str, Any]) -> dict[str, Any]:
        return {
            "recipients": [f["to"]],
            "sender": SENDER,
            "subject": f["subject"],
            "message": f["body"],
            "headers": {"Message-ID": f["message_id"]},
        }

    if shape == "single":
        for f in items:
            mail.send(**kwargs(f))
    else:
        mail.send_many([kwargs(f) for f in items])


def main() -> None:
    """Set Django up, enqueue, print the timing."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=("single", "batch"), required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--tag", required=True, help="Message-IDs are <peer-TAG-i@bench.invalid>")
    args = ap.parse_args()
    django.setup()
    assert celery_app.conf.broker_url  # the libraries' shared_tasks publish through this app
    items = [fields(i, args.tag) for i in range(args.count)]
    send = celery_email if peer_settings.DESIGN == "celery_email" else post_office
    cpu = time.process_time()
    start = time.time()
    send(args.shape, items)
    end = time.time()
    cpu = time.process_time() - cpu
    print(json.dumps({"start": start, "end": end, "cpu": cpu}), flush=True)


if __name__ == "__main__":
    main()
