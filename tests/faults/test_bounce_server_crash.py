"""``kill -9`` of the bounce server while remote MTAs are handing it bounces: every bounce it
answered 250 to is ingested (it answers 250 only once the broker has the message), and the ones
cut off are taken when the senders try again, as MTAs do."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.faults.conftest import MakeFleet
from tests.support.bounces import deliver, render
from tests.support.faulty_relay import FaultyRelay
from tests.support.fleet import Proc
from tests.support.services import free_port, port_open, wait_for
from worker.store import open_store, repo

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

BOUNCES = 80


def job(to: str) -> dict[str, object]:
    return {
        "owner": "acme",
        "identity": "Acme <news@acme.example>",
        "to": [to],
        "subject": f"Hello {to}",
        "text": "Hello",
    }


def test_kill9_of_the_bounce_server_loses_no_accepted_bounce(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay
) -> None:
    port = free_port()
    fleet = make_fleet(MAILDISPATCH_BOUNCE_LISTEN=f"127.0.0.1:{port}")
    fleet.scheduler()
    fleet.worker()
    fleet.worker(queue="mail.bounces", concurrency=1)
    d = fleet.dispatcher
    recipients = [f"gone{i}@example.org" for i in range(BOUNCES)]
    ids = [str(i) for i in d.send_many([job(to) for to in recipients])]
    fleet.wait_final(ids, 30)
    sent = {m.rcpt_tos[0]: m for m in faulty_relay.handler.messages}

    def bounce_server() -> Proc:
        args = [sys.executable, "-m", "producers.cli", "bounce-server"]
        proc = fleet.start(args, "bounce-server.log")
        wait_for(lambda: port_open("127.0.0.1", port), 30, 0.05, "bounce server listening")
        return proc

    def bounce(job_id: str, to: str) -> tuple[str, bool]:
        m = sent[to]
        raw = render(
            "postfix-userunknown",
            RETURN_PATH=m.mail_from,
            RECIPIENT=to,
            MESSAGE_ID=str(m.message["Message-ID"]),
            SUBJECT=f"Hello {to}",
        )
        try:
            return job_id, deliver(port, raw, m.mail_from, sender="")[:2] == ("data", 250)
        except Exception:  # refused or cut off: the sending MTA keeps it and retries later
            return job_id, False

    server = bounce_server()
    accepted: set[str] = set()
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(bounce, i, to) for i, to in zip(ids, recipients, strict=True)]
        killed = False
        for future in futures:
            job_id, ok = future.result()
            if ok:
                accepted.add(job_id)
            if not killed and len(accepted) >= BOUNCES // 3:
                server.kill9()  # mid-stream: other deliveries are in the middle of a transaction
                killed = True
    assert killed and 0 < len(accepted) < BOUNCES
    store = open_store(fleet.env["MAILDISPATCH_DATABASE_URL"])

    def ingested() -> set[str]:
        with store.session() as s:
            return {i for i in ids if repo.failed_sends_for_job(s, i)}

    wait_for(lambda: accepted <= ingested(), 30, 0.2, "every accepted bounce ingested")
    # the senders retry what was cut off; the restarted server takes it
    bounce_server()
    for job_id, to in zip(ids, recipients, strict=True):
        if job_id not in accepted:
            assert bounce(job_id, to)[1], "the restarted bounce server refused a retry"
    wait_for(lambda: ingested() == set(ids), 30, 0.2, "every bounce ingested")
    with store.session() as s:
        rows = [r for i in ids for r in repo.failed_sends_for_job(s, i)]
    assert len(rows) == BOUNCES and {r.kind for r in rows} == {"bounced"}
