"""How fast the Procfile's ``events`` line delivers webhooks, and what each event costs.

Usage: python -m bench.webhooks [--count N]

One endpoint (a local HTTP receiver that answers 200 at once, keep-alive), ``count``
``message.sent`` events of realistic size written to the event stream, then the Procfile's
``scheduler`` line (fan-out into the endpoint's 16 lanes) and ``events`` line (the lane tasks,
signed POSTs) started as a user would. Printed: events received per second from the
scheduler's start to the last, CPU per event of each line (the history is off here: its writer
is bench/history.py's), duplicates and events missing. The figure to compare is the delivery
rate of docs/performance.md: events keep up when they go out at least as fast as email.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import msc
from bench.common import REPO, Proc, RedisServer, sent_event, tree_cpu
from config import keys

OWNER = "acct-hooks"
_READY = re.compile(r"@\S+ ready\.")


class Receiver:
    """Counts POSTs by ``webhook-id``; answers 200, keeping the connection alive.

    An asyncio protocol on a thread of its own rather than ``http.server``: the receiver shares
    the two cores with the line it measures, as the bench relay does with the workers, so it
    should cost little (~40 µs a request against ~170 for ``ThreadingHTTPServer``)."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.last = 0.0
        self.loop = asyncio.new_event_loop()
        outer = self

        class Protocol(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport
                self.buffer = b""

            def data_received(self, data: bytes) -> None:
                self.buffer += data
                answers = 0
                while True:
                    head_end = self.buffer.find(b"\r\n\r\n")
                    if head_end < 0:
                        break
                    fields = {}
                    for line in self.buffer[:head_end].split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        fields[name.strip().lower()] = value.strip()
                    end = head_end + 4 + int(fields.get(b"content-length", b"0"))
                    if len(self.buffer) < end:
                        break
                    self.buffer = self.buffer[end:]
                    outer.ids.append(fields.get(b"webhook-id", b"").decode())
                    answers += 1
                if answers:
                    outer.last = time.time()
                    self.transport.write(outer.ANSWER * answers)

        server = self.loop.run_until_complete(
            self.loop.create_server(Protocol, "127.0.0.1", 0, backlog=256)
        )
        self.server = server
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hooks"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _events(redis: RedisServer, count: int) -> None:
    pipe = redis.client.pipeline(transaction=False)
    for n in range(count):
        job_id = str(uuid.uuid4())
        pipe.xadd(keys.events_of(job_id), sent_event(n, job_id, OWNER))
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()


def _wait_ready(proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _READY.search(proc.log.read_text(errors="replace")):
            return
        time.sleep(0.1)
    raise RuntimeError("the events line did not start:\n" + proc.tail())


def run(tmp: Path, count: int, timeout: float = 300.0) -> dict[str, Any]:
    """One run: the figures."""
    tmp.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(tmp)
    receiver = Receiver()
    procs: list[Proc] = []
    try:
        env = msc.worker_env(redis.url, "smtp://127.0.0.1:9", tmp) | {
            "MAILDISPATCH_SMTP_ALLOWED_NETWORKS": "127.0.0.0/8",  # the receiver is on loopback
            "MAILDISPATCH_HISTORY_DAYS": "0",
        }
        command = ["webhooks", "add", "--owner", OWNER, "--url", receiver.url, "--json"]
        added = subprocess.run(
            [sys.executable, "-m", "producers.cli", *command],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        json.loads(added.stdout)
        time.sleep(0.01)  # events written after the endpoint was added are its
        _events(redis, count)
        events = Proc(msc.procfile_command("events"), tmp / "events.log", env)
        procs.append(events)
        _wait_ready(events)
        events_cpu, own_cpu = tree_cpu(events.pid), time.process_time()
        start = time.time()
        scheduler = Proc(msc.procfile_command("scheduler"), tmp / "scheduler.log", env)
        procs.append(scheduler)
        deadline = time.monotonic() + timeout
        while len(set(receiver.ids)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        got = len(set(receiver.ids))
        seconds = max(receiver.last - start, 1e-9)
        return {
            "count": count,
            "received": got,
            "duplicates": len(receiver.ids) - got,
            "per_s": got / seconds,
            "cpu_us": {
                "events": (tree_cpu(events.pid) - events_cpu) / max(got, 1) * 1e6,
                "scheduler": tree_cpu(scheduler.pid) / max(got, 1) * 1e6,
                "receiver": (time.process_time() - own_cpu) / max(got, 1) * 1e6,
            },
        }
    finally:
        for proc in reversed(procs):
            proc.stop(timeout=20.0)
        receiver.close()
        redis.stop()


def line(f: dict[str, Any]) -> str:
    """One report line."""
    missing = f["count"] - f["received"]
    return (
        f"webhooks, the events line started once ({f['count']:,} events, one endpoint): "
        f"{f['per_s']:,.0f} events/s; CPU per event: events line {f['cpu_us']['events']:,.0f} µs, "
        f"scheduler {f['cpu_us']['scheduler']:,.0f} µs, the receiver {f['cpu_us']['receiver']:,.0f} µs"
        + (f"; !! {missing} missing" if missing else "")
        + (f"; {f['duplicates']} duplicates" if f["duplicates"] else "")
    )


def main() -> int:
    """Run it alone."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="maildispatch-webhooks-") as tmp:
        print(line(run(Path(tmp), args.count)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
