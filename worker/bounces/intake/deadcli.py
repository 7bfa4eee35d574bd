"""``maildispatch bounces dead list|retry|drop``: the operator's view of the dead letters."""

from __future__ import annotations

import argparse
import json
import sys
import time

import redis

from config.settings import get_settings
from worker.bounces.intake.deadletter import DeadLetters
from worker.bounces.intake.enqueue import BounceNotQueued, BouncePublisher, InboundMessage

__all__ = ["dead_command"]


def dead_command(args: argparse.Namespace) -> int:
    """Run one ``bounces dead`` action; exit 1 when an id was unknown or could not be queued."""
    settings = get_settings()
    client = redis.Redis.from_url(settings.state_redis_url, socket_timeout=10)
    dead = DeadLetters(client)
    out = sys.stdout
    try:
        if args.dead_action == "list":
            for entry in dead.entries():
                if args.json:
                    out.write(json.dumps(entry) + "\n")
                else:
                    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["at"]))
                    out.write(
                        f"{entry['id']}  {when}  {entry['why']:<18} {entry['source'] or '-':<5} "
                        f"{entry.get('size') or '-'} bytes\n"
                    )
            return 0
        if args.dead_action == "drop":
            status = 0
            for entry_id in args.ids:
                if not dead.drop(entry_id):
                    sys.stderr.write(f"no dead letter {entry_id}\n")
                    status = 1
            return status
        return _retry(dead, args.ids, settings)
    finally:
        client.close()


def _retry(dead: DeadLetters, ids: list[str], settings: object) -> int:
    from config.settings import Settings

    assert isinstance(settings, Settings)
    publisher = BouncePublisher(settings)
    status = 0
    try:
        for entry_id in ids:
            found = dead.get(entry_id)
            if found is None:
                sys.stderr.write(f"no dead letter {entry_id}\n")
                status = 1
                continue
            meta, wire = found
            try:
                message = InboundMessage.from_wire(wire)
            except ValueError:
                sys.stderr.write(f"{entry_id}: no message to ingest ({meta['why']}); drop it\n")
                status = 1
                continue
            try:
                task_id = publisher.publish(message)
            except BounceNotQueued as exc:
                sys.stderr.write(f"{entry_id}: not queued, kept: {exc}\n")
                status = 1
                continue
            dead.drop(entry_id)  # only once the broker has it: never lost between the two
            sys.stdout.write(f"{entry_id} queued as {task_id}\n")
    finally:
        publisher.close()
    return status
