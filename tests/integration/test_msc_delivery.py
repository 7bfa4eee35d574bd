"""The spine end to end: producer -> Redis -> real MSC worker -> real SMTP relay -> Failed Sends."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from config import keys
from config.celery import make_celery
from producers.client import Dispatcher
from tests.support.env import SECRET
from tests.support.events import all_events
from tests.support.fleet import Fleet
from tests.support.queue import depth
from tests.support.relay import Relay
from tests.support.services import wait_for
from worker.message.returnpath import token_from_address

FINAL = {"sent", "failed", "suppressed", "bounced"}


def job(to: str, **overrides: object) -> dict[str, object]:
    return {
        "owner": "acme",
        "identity": "Acme Support <support@acme.example>",
        "to": [to],
        "subject": f"Hello {to}",
        "text": "Body text\n",
        "metadata": {"conversation": "c-1"},
    } | overrides


def wait_final(
    d: Dispatcher, ids: list[uuid.UUID], timeout: float = 60
) -> dict[str, dict[str, str]]:
    states: dict[str, dict[str, str]] = {}

    def done() -> bool:
        nonlocal states
        states = {str(i): d.status(i) or {} for i in ids}
        return all(s.get("state") in FINAL for s in states.values())

    wait_for(done, timeout, 0.1, "jobs to reach a final state")
    return states


def test_batch_arrives_exactly_once_with_headers_and_envelope(fleet: Fleet, relay: Relay) -> None:
    d = Dispatcher(fleet.settings)
    jobs = [
        job(f"user{i}@example.org", cc=[f"cc{i}@example.net"], bcc=[f"bcc{i}@example.net"])
        for i in range(300)
    ]
    ids = d.send_many(jobs)
    states = wait_final(d, ids)
    assert all(s["state"] == "sent" for s in states.values())
    counts = relay.handler.by_message_id()
    # one transaction per recipient (to, cc, bcc), each with that recipient's own return path
    assert len(counts) == 300 and set(counts.values()) == {3}
    envelopes = [(m.mail_from, tuple(m.rcpt_tos)) for m in relay.handler.messages]
    assert all(len(rcpts) == 1 for _, rcpts in envelopes)
    assert len({sender for sender, _ in envelopes}) == 900
    # each message's copies, grouped once (a header is parsed on every access: not per job)
    copies_of: dict[str, list[Any]] = {}
    for m in relay.handler.messages:
        copies_of.setdefault(str(m.message["Message-ID"]), []).append(m)
    for job_id, data in zip(ids, jobs, strict=True):
        copies = copies_of[f"<{job_id}@mail.operator.test>"]
        got = copies[0]
        msg = got.message
        assert msg["From"].addresses[0].addr_spec == "support@acme.example"
        assert msg["Sender"] == "mailer@mail.operator.test"
        assert msg["Bcc"] is None and data["bcc"][0].encode() not in got.data  # type: ignore[index]
        wanted = sorted([data["to"][0], data["cc"][0], data["bcc"][0]])  # type: ignore[index]
        assert sorted(r for m in copies for r in m.rcpt_tos) == wanted
        for m in copies:
            token = token_from_address(m.mail_from, [SECRET], "bounces.operator.test")
            assert token is not None and token.job_id == job_id and token.names(m.rcpt_tos[0])
    d.close()


def test_rejected_recipient_becomes_a_failed_send(fleet: Fleet, relay: Relay) -> None:
    d = Dispatcher(fleet.settings)
    (job_id,) = d.send_many([job("reject-ghost@example.org")])
    assert wait_final(d, [job_id])[str(job_id)]["state"] == "failed"
    out = fleet.cli("failed", "list", "--owner", "acme", "--json")
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout)["items"] if r["job_id"] == str(job_id)]
    assert len(rows) == 1
    r = rows[0]
    assert (r["recipient"], r["kind"], r["reply_code"], r["enhanced_status"]) == (
        "reject-ghost@example.org",
        "rejected",
        550,
        "5.1.1",
    )
    assert r["reason"] == "userunknown" and r["hard"] is True
    assert "User unknown" in r["diagnostic"] and r["subject"] == "Hello reject-ghost@example.org"
    assert r["metadata"] == {"conversation": "c-1"}
    assert relay.handler.messages == []
    d.close()


def test_partial_rejection_delivers_the_others(fleet: Fleet, relay: Relay) -> None:
    d = Dispatcher(fleet.settings)
    (job_id,) = d.send_many([job("ok@example.org", cc=["reject-x@example.org"])])
    state = wait_final(d, [job_id])[str(job_id)]
    assert state["state"] == "sent"
    assert [m.rcpt_tos for m in relay.handler.messages] == [["ok@example.org"]]
    out = json.loads(fleet.cli("status", str(job_id), "--json").stdout)
    assert [f["recipient"] for f in out["failed_sends"]] == ["reject-x@example.org"]
    d.close()


def test_451_twice_then_accepted_is_delivered_once(fleet: Fleet, relay: Relay) -> None:
    d = Dispatcher(fleet.settings)
    (job_id,) = d.send_many([job("defer2-slow@example.org")])
    state = wait_final(d, [job_id])[str(job_id)]
    assert state["state"] == "sent" and state["attempts"] == "3"
    assert relay.handler.attempts["defer2-slow@example.org"] == 3
    assert list(relay.handler.by_message_id().values()) == [1]
    d.close()


def test_retries_exhausted_become_expired(fleet: Fleet, relay: Relay) -> None:
    d = Dispatcher(fleet.settings)
    (job_id,) = d.send_many([job("defer999-never@example.org")])
    # give-up is 6 s in the fleet: the job expires with its last error
    state = wait_final(d, [job_id], timeout=30)[str(job_id)]
    assert state["state"] == "failed"
    out = json.loads(fleet.cli("status", str(job_id), "--json").stdout)
    assert [f["kind"] for f in out["failed_sends"]] == ["expired"]
    assert out["failed_sends"][0]["reply_code"] == 451
    d.close()


def test_redelivered_batch_does_not_send_twice(fleet: Fleet, relay: Relay) -> None:
    d = Dispatcher(fleet.settings)
    jobs = [job(f"twice{i}@example.org") for i in range(20)]
    ids = d.send_many(jobs)
    wait_final(d, ids)
    # the broker hands the same batch out again (as after a lost ack): nothing is sent again
    wires = [{**j, "id": str(i), "channel": "msc"} for j, i in zip(jobs, ids, strict=True)]
    d.publish(wires)
    wait_for(lambda: depth(fleet.redis, "mail.msc") == 0, 30, what="queue drained")
    wait_for(lambda: True, 1)
    assert sum(relay.handler.by_message_id().values()) == 20
    d.close()


def test_a_cancelled_job_is_never_sent_and_a_sent_one_cannot_be_cancelled(
    fleet: Fleet, relay: Relay
) -> None:
    d = Dispatcher(fleet.settings)
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    jobs = [
        job("later-cancel@example.org", send_at=soon),  # scheduled
        job("defer999-cancel@example.org"),  # the relay defers it: retried every 0.6 s
        job("now-cancel@example.org"),
    ]
    scheduled, retrying, now = d.send_many(jobs)
    assert d.cancel(scheduled) == "cancelled"
    wait_for(lambda: relay.handler.attempts["defer999-cancel@example.org"] >= 1, 20)

    def cancel_retrying() -> bool:  # between two attempts (not during one: "sending")
        state = d.cancel(retrying)
        assert state in ("cancelled", "sending"), state
        return state == "cancelled"

    wait_for(cancel_retrying, 20, 0.05, "the retrying job cancelled")
    tried = relay.handler.attempts["defer999-cancel@example.org"]
    assert wait_final(d, [now])[str(now)]["state"] == "sent"
    assert d.cancel(now) == "sent"  # too late
    assert d.cancel(uuid.uuid4()) is None
    # the task of a cancelled job reaching a worker anyway (taken by the scheduler just before
    # the cancel, or redelivered) is skipped
    d.publish([{**jobs[0], "id": str(scheduled), "channel": "msc"}])
    time.sleep(3)  # past send_at, and several retry delays
    assert relay.handler.attempts["defer999-cancel@example.org"] == tried
    assert "later-cancel@example.org" not in relay.handler.attempts
    assert {d.status(i)["state"] for i in (scheduled, retrying)} == {"cancelled"}  # type: ignore[index]
    assert sum(fleet.redis.zcard(schedule) for schedule in keys.SCHEDULES) == 0
    assert fleet.cli("cancel", str(now)).returncode == 3  # the CLI: too late
    assert d.cancel(scheduled) == "cancelled"  # again: nothing changes, no second event
    stream = all_events(fleet.redis)

    def events(job_id: uuid.UUID) -> list[dict[str, Any]]:
        return [e for e in stream if e["data"]["job_id"] == str(job_id)]

    (cancelled,) = events(scheduled)  # waiting for its send_at: its recipients are known
    assert cancelled["type"] == "message.cancelled"
    assert cancelled["data"]["recipients"] == ["later-cancel@example.org"]
    assert cancelled["data"]["owner"] == jobs[0]["owner"]
    kinds = [e["type"] for e in events(retrying)]
    assert kinds[-1] == "message.cancelled" and set(kinds[:-1]) == {"message.retrying"}
    assert [e["type"] for e in events(now)] == ["message.sent"]
    d.close()


def test_messages_queued_in_base64_by_an_older_producer_are_delivered(
    fleet: Fleet, relay: Relay
) -> None:
    # before 2026-11-30 task bodies went into kombu's envelope as base64; during a rolling
    # upgrade such messages still wait on the queue. Each message names its own encoding.
    older = make_celery(fleet.settings, "older-producer")
    older.conf.broker_transport_options = {
        **older.conf.broker_transport_options,
        "body_encoding": "base64",
    }
    with older.connection_for_write() as conn:
        assert conn.default_channel.body_encoding == "base64"
    d = Dispatcher(fleet.settings, celery_app=older)
    ids = d.send_many([job(f"old{i}@example.org") for i in range(3)])
    states = wait_final(d, ids)
    assert all(s["state"] == "sent" for s in states.values())
    assert len(relay.handler.by_message_id()) == 3
    d.close()


def test_mixed_recipient_results_are_merged_per_recipient(fleet: Fleet, relay: Relay) -> None:
    """One recipient accepted, one refused for good (550), one deferred (451): one Failed Send
    for the 550, a retry for the 451 only, and the accepted one never sent again."""
    d = Dispatcher(fleet.settings)
    tag = uuid.uuid4().hex[:8]
    ok, gone, slow = (f"ok-{tag}@example.org", f"reject-{tag}@example.org", f"defer1-{tag}@ex.org")
    (job_id,) = d.send_many([job(ok, cc=[gone], bcc=[slow])])
    state = wait_final(d, [job_id])[str(job_id)]
    assert state["state"] == "sent" and state["attempts"] == "2"
    attempts = relay.handler.attempts
    assert (attempts[ok], attempts[gone], attempts[slow]) == (1, 1, 2)
    delivered = [m.rcpt_tos for m in relay.handler.messages]
    assert sorted(delivered) == sorted([[ok], [slow]])  # each once, in its own transaction
    assert relay.handler.by_message_id()[f"<{job_id}@mail.operator.test>"] == 2
    out = json.loads(fleet.cli("status", str(job_id), "--json").stdout)
    assert [(f["recipient"], f["kind"], f["reply_code"]) for f in out["failed_sends"]] == [
        (gone, "rejected", 550)
    ]
    d.close()


def test_a_store_away_holds_the_batch_unclaimed_until_it_is_back(
    fleet: Fleet, relay: Relay
) -> None:
    # The suppression lookup runs while the batch is registered in flight, but every job waits
    # for it before its claim: a store that fails the lookup crashes the batch with no job
    # claimed (a claimed job would come back as `uncertain`), and the batch is delivered, once
    # each, when the store answers again.
    d = Dispatcher(fleet.settings)
    db = sqlite3.connect(fleet.database_file)
    db.execute("ALTER TABLE suppressions RENAME TO suppressions_away")
    db.commit()
    try:
        before = fleet.logs().count("no such table: suppressions")
        ids = d.send_many([job(f"away{i}@example.org") for i in range(5)])
        wait_for(
            lambda: fleet.logs().count("no such table: suppressions") > before,
            10,
            what="the batch crashed on the store",
        )
        assert {d.status(i)["state"] for i in ids} == {"queued"}
        assert relay.handler.by_message_id() == {}
    finally:
        db.execute("ALTER TABLE suppressions_away RENAME TO suppressions")
        db.commit()
        db.close()
    states = wait_final(d, ids)
    assert {s["state"] for s in states.values()} == {"sent"}
    assert sorted(relay.handler.by_message_id().values()) == [1] * 5
    d.close()
