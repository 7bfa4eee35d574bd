"""Bounces end to end, as the Procfile runs them: MSC worker, ``bounces`` worker, bounce server.

A job goes out through MSC to the test relay; a DSN for it, addressed to its return path, comes
back over SMTP to ``maildispatch bounce-server``; the ingest worker turns it into a Failed Send
that ``maildispatch failed list --json`` shows within seconds, and the next MSC job to that
address fails as ``suppressed`` without reaching the relay. Forged and foreign reports leave no
row.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.client import Dispatcher
from tests.conftest import logs_of
from tests.e2e.test_cli import run
from tests.integration.test_msc_delivery import job, wait_final
from tests.support.bounces import deliver, forged_return_path, render
from tests.support.fleet import Fleet
from tests.support.relay import Relay
from tests.support.services import (
    REPO,
    background,
    celery_worker_args,
    free_port,
    port_open,
    wait_for,
)
from worker.store import open_store, repo

CORPUS = REPO.parent / "shared" / "bounce-corpus" / "dev"


class Bounces:
    """The bounce side of the fleet: the ingest worker and the bounce server."""

    def __init__(self, port: int, worker_log: Path, server_log: Path) -> None:
        self.port = port
        self.worker_log = worker_log
        self.server_log = server_log


@pytest.fixture(scope="module")
def bounces(msc_fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bounces]:
    tmp = tmp_path_factory.mktemp("bounces")
    port = free_port()
    env = msc_fleet.env | {"MAILDISPATCH_BOUNCE_LISTEN": f"127.0.0.1:{port}"}
    worker_log, server_log = tmp / "bounces-worker.log", tmp / "bounce-server.log"
    with (
        background(celery_worker_args("mail.bounces"), env, worker_log),
        background([sys.executable, "-m", "producers.cli", "bounce-server"], env, server_log),
    ):
        wait_for(lambda: "ready" in worker_log.read_text(errors="replace"), 60, what="worker")
        wait_for(lambda: port_open("127.0.0.1", port), 30, what="bounce server")
        yield Bounces(port, worker_log, server_log)


def sent(d: Dispatcher, relay: Relay, to: str) -> tuple[str, str, str]:
    """Send a job through MSC; returns (job id, its return path, its Message-ID)."""
    (job_id,) = d.send_many([job(to)])
    assert wait_final(d, [job_id])[str(job_id)]["state"] == "sent"
    (message,) = [m for m in relay.handler.messages if to in m.rcpt_tos]
    return str(job_id), message.mail_from, str(message.message["Message-ID"])


def failed_rows(fleet: Fleet, job_id: str) -> list[dict[str, object]]:
    out = run(fleet.env, "failed", "list", "--owner", "acme", "--json")
    assert out.returncode == 0, out.stderr
    return [r for r in json.loads(out.stdout)["items"] if r["job_id"] == job_id]


def rows_in_store(fleet: Fleet, job_id: str) -> int:
    with open_store(fleet.database_url).session() as s:
        return len(repo.failed_sends_for_job(s, job_id))


def test_bounce_becomes_a_failed_send_and_suppresses_the_next_job(
    fleet: Fleet, relay: Relay, bounces: Bounces
) -> None:
    d = Dispatcher(fleet.settings)
    to = f"gone-{uuid.uuid4().hex[:8]}@example.org"
    job_id, return_path, message_id = sent(d, relay, to)
    raw = render(
        "postfix-userunknown",
        RETURN_PATH=return_path,
        RECIPIENT=to,
        MESSAGE_ID=message_id,
        SUBJECT=f"Hello {to}",
    )
    started = time.monotonic()
    assert deliver(bounces.port, raw, return_path, sender="")[:2] == ("data", 250)
    wait_for(lambda: rows_in_store(fleet, job_id) == 1, 15, what="the Failed Send")
    took = time.monotonic() - started
    (row,) = failed_rows(fleet, job_id)
    assert (row["recipient"], row["kind"], row["action"]) == (to, "bounced", "failed")
    assert (row["reply_code"], row["enhanced_status"], row["reason"], row["hard"]) == (
        550,
        "5.1.1",
        "userunknown",
        True,
    )
    assert row["subject"] == f"Hello {to}" and row["metadata"] == {"conversation": "c-1"}
    assert row["identity"] == "Acme Support <support@acme.example>"
    assert "User unknown" in str(row["diagnostic"])
    assert took < 10, f"ingest took {took:.1f}s"
    assert d.status(job_id)["state"] == "bounced"  # type: ignore[index]

    sups = json.loads(run(fleet.env, "suppressions", "list", "--owner", "acme", "--json").stdout)
    assert {s["address"]: s["reason"] for s in sups}.get(to) == "userunknown"

    # the next MSC job to that address fails fast, without contacting the relay
    before = len(relay.handler.messages)
    (again,) = d.send_many([job(to)])
    assert wait_final(d, [again])[str(again)]["state"] == "suppressed"
    (blocked,) = failed_rows(fleet, str(again))
    assert (blocked["kind"], blocked["recipient"], blocked["reason"]) == (
        "suppressed",
        to,
        "suppressed",
    )
    assert len(relay.handler.messages) == before
    assert to not in relay.handler.attempts or relay.handler.attempts[to] == 1

    # an operator (or a product, over HTTP) adds an unsubscribe and lifts the bounce's entry
    added = run(fleet.env, "suppressions", "add", "--owner", "acme", "--reason", "unsub", "Z@x.org")
    assert added.returncode == 0, added.stderr
    assert run(fleet.env, "suppressions", "add", "--owner", "acme", "nope").returncode != 0
    assert run(fleet.env, "suppressions", "remove", "--owner", "acme", to).returncode == 0
    sups = json.loads(run(fleet.env, "suppressions", "list", "--owner", "acme", "--json").stdout)
    assert {s["address"]: s["reason"] for s in sups} == {"z@x.org": "unsub"}
    d.close()


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/bounce-corpus is not here")
def test_a_corpus_bounce_sent_to_the_return_path_is_classified(
    fleet: Fleet, relay: Relay, bounces: Bounces
) -> None:
    expected = json.loads((CORPUS / "expected.json").read_text())
    name, (want,) = next(
        (n, rows)
        for n, rows in sorted(expected.items())
        if n.startswith("lhost-postfix") and len(rows) == 1 and rows[0]["hard_bounce"]
    )
    d = Dispatcher(fleet.settings)
    to = f"corpus-{uuid.uuid4().hex[:8]}@example.org"
    job_id, return_path, _ = sent(d, relay, to)
    # the corpus message unchanged: its Final-Recipient is not ours, but the job had a single
    # recipient, so the report (to our verified return path) is about that recipient
    raw = (CORPUS / name).read_bytes()
    assert deliver(bounces.port, raw, return_path)[:2] == ("data", 250)
    wait_for(lambda: rows_in_store(fleet, job_id) == 1, 15, what=f"the Failed Send of {name}")
    (row,) = failed_rows(fleet, job_id)
    assert (row["recipient"], row["reason"], row["hard"]) == (to, want["reason"], True)
    assert row["enhanced_status"] == want["status"]
    d.close()


def test_forged_and_foreign_reports_leave_no_row(
    fleet: Fleet, relay: Relay, bounces: Bounces
) -> None:
    d = Dispatcher(fleet.settings)
    to = f"victim-{uuid.uuid4().hex[:8]}@example.org"
    job_id, genuine, _ = sent(d, relay, to)
    forged = forged_return_path(fleet.settings.bounce_domain)
    raw = render("postfix-userunknown", RETURN_PATH=forged, RECIPIENT=to)
    # refused at RCPT: the token is checked before any data is read
    assert deliver(bounces.port, raw, forged)[:2] == ("rcpt", 550)
    # a genuine token at a domain none of our return paths use (ours are the bounce domain and
    # verified sending domains' bounces.<domain>): refused at RCPT
    elsewhere = genuine.replace(fleet.settings.bounce_domain, "mail.elsewhere.example")
    raw = render("postfix-userunknown", RETURN_PATH=elsewhere, RECIPIENT=to)
    assert deliver(bounces.port, raw, elsewhere)[:2] == ("rcpt", 550)
    assert rows_in_store(fleet, job_id) == 0
    sups = json.loads(run(fleet.env, "suppressions", "list", "--json").stdout)
    assert to not in {s["address"] for s in sups}
    assert d.status(job_id)["state"] == "sent", logs_of(bounces.worker_log)  # type: ignore[index]
    assert to not in bounces.worker_log.read_text(errors="replace")
    d.close()
