"""The ceiling: raw aiosmtplib, 32 concurrent connections, messages built before the clock starts.

Usage: python bench/ceiling.py --port P --count N [--connections 32] [--run TAG] [--go]

It sends the very bytes maildispatch would send for the same jobs (built beforehand with
``worker.message.build.build_message``, no DKIM), so the only difference with the maildispatch row is
everything maildispatch does around the SMTP transaction. Prints one JSON line: ``start`` (the
wall clock before the first connection), the count sent and the CPU it used; the bench reads
the end time from the relay.

The bench runs it once (the single-process ceiling the targets are defined against) and as
many times at once as maildispatch runs worker processes; with ``--go`` each copy prints
``ready`` once its messages are built and starts sending when a line arrives on its stdin, so
that every copy starts together.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosmtplib

from bench.common import BOUNCE_DOMAIN, DOMAIN, SECRET, job
from producers.job import SendJob
from worker.message.build import build_message
from worker.message.returnpath import return_path


def prepare(count: int, run: str) -> list[tuple[str, list[str], bytes]]:
    """Envelope and bytes of every message, built outside the measured time."""
    out = []
    for i in range(count):
        j = SendJob.model_validate(job(i, run))
        msg = build_message(j, domain=DOMAIN, sender=f"mailer@{DOMAIN}", date=time.time())
        out.append((return_path(j.id, SECRET, BOUNCE_DOMAIN), list(j.recipients), msg.data))
    return out


async def blast(port: int, messages: list[tuple[str, list[str], bytes]], connections: int) -> int:
    """Send every message over ``connections`` concurrent connections; the number sent."""
    queue = iter(messages)
    sent = 0

    async def one_connection() -> None:
        nonlocal sent
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120, local_hostname=DOMAIN)
        await smtp.connect()
        for mail_from, rcpts, data in queue:  # one shared iterator: each message sent once
            await smtp.sendmail(mail_from, rcpts, data)
            sent += 1
        await smtp.quit()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return sent


def main() -> None:
    """Prepare, then send as fast as possible and report the start time."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--run", default="ceiling")
    ap.add_argument("--go", action="store_true", help="print ready, wait for a line on stdin")
    args = ap.parse_args()
    messages = prepare(args.count, args.run)
    if args.go:
        print("ready", flush=True)
        sys.stdin.readline()
    cpu = time.process_time()
    start = time.time()
    sent = asyncio.run(blast(args.port, messages, args.connections))
    cpu = time.process_time() - cpu
    print(json.dumps({"start": start, "sent": sent, "end": time.time(), "cpu": cpu}), flush=True)


if __name__ == "__main__":
    main()
