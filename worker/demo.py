"""``make demo``: the main job end to end on the embedded defaults, then a table of outcomes.

Starts (and afterwards stops) a stand-in relay (aiosmtpd) and a real MSC worker process, which
runs the retry scheduler on a thread of its main process; uses Redis at MAILDISPATCH_BROKER_URL
(or a private redis-server when nothing answers there) and the SQLite store under ``var/``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from rich.console import Console
from rich.table import Table

from config.settings import Settings
from producers.client import Dispatcher
from worker.consume.supervisor import celery_command

VAR = Path("var")


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DemoRelay:
    """A relay that accepts everything except ``nobody@`` (550 5.1.1) and ``busy@`` once (451)."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, list[str]]] = []
        self._deferred: set[str] = set()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Answer each recipient as the demo scripts it."""
        local = address.split("@")[0].lower()
        if local == "nobody":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if local == "busy" and address not in self._deferred:
            self._deferred.add(address)
            return f"451 4.2.0 <{address}>: mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Accept the message."""
        self.delivered.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 2.0.0 queued"


@contextmanager
def redis_url(wanted: str) -> Iterator[str]:
    """``wanted`` when a Redis answers there, else a private redis-server on a free port."""
    try:
        redis.Redis.from_url(wanted, socket_connect_timeout=1).ping()
        yield wanted
        return
    except redis.RedisError:
        if not shutil.which("redis-server"):
            raise SystemExit(
                f"no Redis at {wanted} and no redis-server on PATH to start one"
            ) from None
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.RedisError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, terminated (then killed) on exit."""
    log = (VAR / f"demo-{Path(args[2] if len(args) > 2 else args[0]).name}.log").open("wb")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _secret() -> str:
    path = VAR / "demo-secret.key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def demo_jobs() -> list[dict[str, Any]]:
    """A small batch: plain deliveries, one rejected recipient, one deferred once."""
    identity = "Ada from Acme <ada@acme.example>"
    rows = [
        ("grace@example.org", "Your invoice"),
        ("alan@example.org", "Welcome aboard"),
        ("edsger@example.net", "Meeting notes"),
        ("busy@example.net", "Retried then delivered"),
        ("nobody@example.com", "Rejected: no such mailbox"),
        ("barbara@example.com", "Weekly digest"),
    ]
    return [
        {
            "owner": "demo",
            "identity": identity,
            "to": [to],
            "subject": subject,
            "text": f"Hello,\n\nthis is maildispatch's demo: {subject}.\n",
            "metadata": {"demo": True},
        }
        for to, subject in rows
    ]


def run_demo(timeout: float = 90.0) -> int:
    """Run the demo; exit status 0 when every job reached the outcome the relay scripts."""
    VAR.mkdir(exist_ok=True)
    console = Console(width=None if sys.stdout.isatty() else 140)
    with ExitStack() as stack:
        broker = stack.enter_context(
            redis_url(os.environ.get("MAILDISPATCH_BROKER_URL", "redis://127.0.0.1:6379/0"))
        )
        relay = DemoRelay()
        port = free_port()
        controller = Controller(relay, hostname="127.0.0.1", port=port)
        controller.start()
        stack.callback(controller.stop)
        db = VAR / "demo.db"
        for leftover in VAR.glob("demo.db*"):
            leftover.unlink()
        env = {
            **os.environ,
            "MAILDISPATCH_BROKER_URL": broker,
            "MAILDISPATCH_DATABASE_URL": f"sqlite:///{db}",
            "MAILDISPATCH_MSC_RELAYS": f"smtp://127.0.0.1:{port}",
            "MAILDISPATCH_SECRET_KEY": _secret(),
            "MAILDISPATCH_MSC_RETRY_DELAYS": "1s,2s",
            "MAILDISPATCH_LOG_FORMAT": "json",
        }
        settings = Settings(
            broker_url=broker,
            database_url=env["MAILDISPATCH_DATABASE_URL"],
            secret_key=env["MAILDISPATCH_SECRET_KEY"],
        )
        celery = celery_command("mail.msc", "-l", "WARNING")
        stack.enter_context(process(celery, env))
        dispatcher = Dispatcher(settings)
        stack.callback(dispatcher.close)
        jobs = demo_jobs()
        console.print(f"relay 127.0.0.1:{port} · broker {broker} · store {db}")
        ids = dispatcher.send_many(jobs)
        console.print(f"enqueued {len(ids)} jobs; waiting for the MSC worker…")
        deadline = time.monotonic() + timeout
        states: dict[str, dict[str, str]] = {}
        while time.monotonic() < deadline:
            states = {str(i): dispatcher.status(i) or {} for i in ids}
            if all(s.get("state") in ("sent", "failed", "suppressed") for s in states.values()):
                break
            time.sleep(0.2)
        table = Table(title="maildispatch demo: what happened to each message")
        for col in ("recipient", "subject", "outcome", "attempts", "detail"):
            table.add_column(col)
        ok = True
        for job, job_id in zip(jobs, ids, strict=True):
            s = states[str(job_id)]
            state, attempts = s.get("state", "?"), int(s.get("attempts", 0))
            outcome = {"sent": "delivered", "failed": "failed"}.get(state, state)
            if state == "sent" and attempts > 1:
                outcome = "retried, then delivered"
            detail = s.get("reply", "") if state == "sent" else s.get("last_error", "")
            table.add_row(job["to"][0], job["subject"], outcome, str(attempts), detail)
            expected = "failed" if job["to"][0].startswith("nobody") else "sent"
            ok &= state == expected and (attempts > 1) == job["to"][0].startswith("busy")
        console.print(table)
        console.print(
            f"relay received {len(relay.delivered)} message(s); Failed Sends: `maildispatch failed list` with MAILDISPATCH_DATABASE_URL=sqlite:///{db}"
        )
        if not ok:
            console.print("[red]unexpected outcome (see var/demo-*.log)[/red]")
        return 0 if ok else 1
