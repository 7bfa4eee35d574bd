"""Bounce ingest against real Redis and real SQLite/PostgreSQL stores: rows, suppressions, drops.

The job state hashes are written the way the producer and the MSC delivery write them; the full
path through real processes is in tests/e2e/test_bounces_e2e.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from config import keys
from config.settings import Settings
from tests.support.bounces import forged_return_path, render
from tests.support.env import SECRET
from tests.support.events import all_events
from worker.bounces.intake.enqueue import InboundMessage
from worker.bounces.intake.ingest import Ingest
from worker.message.returnpath import return_path
from worker.store import repo
from worker.store.db import Store

DOMAIN = "bounces.operator.test"
OLD_SECRET = "the-key-before-rotation-0123456789"


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.dispose()


def make_ingest(redis_url: str, client: redis.Redis, store: Store) -> Ingest:
    settings = Settings(
        secret_key=SECRET,
        previous_secret_keys=OLD_SECRET,  # type: ignore[arg-type]
        bounce_domain=DOMAIN,
        redis_url=redis_url,
        database_url=store.url,
    )
    return Ingest(settings, client, store)


def sent_job(
    client: redis.Redis,
    recipients: list[str],
    *,
    owner: str = "acme",
    channel: str = "msc",
    key: str = SECRET,
) -> tuple[str, str]:
    """A job in state ``sent`` as producer + MSC delivery leave it; returns (id, return path)."""
    job_id = uuid.uuid4()
    client.hset(
        keys.job(str(job_id)),
        mapping={
            "state": "sent",
            "owner": owner,
            "channel": channel,
            "subject": "Your invoice",
            "identity": "Acme Support <support@acme.example>",
            "recipients": len(recipients),
            "attempts": 1,
            "enqueued_at": time.time(),
            "rcpts": json.dumps([r.lower() for r in recipients]),
            "metadata": json.dumps({"conversation": "c-9"}),
        },
    )
    client.expire(keys.job(str(job_id)), 3600)
    return str(job_id), return_path(job_id, key, DOMAIN)


def smtp(raw: bytes, *rcpts: str) -> InboundMessage:
    return InboundMessage(raw=raw, source="smtp", rcpt_tos=rcpts, mail_from="")


COLUMNS = [
    "recipient",
    "kind",
    "action",
    "reply_code",
    "enhanced_status",
    "reason",
    "hard",
    "diagnostic",
    "subject",
    "identity",
    "owner",
    "channel",
    "job_metadata",
]


def rows(store: Store, job_id: str) -> list[dict[str, object]]:
    with store.session() as s:
        return [{c: getattr(r, c) for c in COLUMNS} for r in repo.failed_sends_for_job(s, job_id)]


def suppressions(store: Store, owner: str = "acme") -> dict[str, str]:
    with store.session() as s:
        return {x.address: x.reason for x in repo.list_suppressions(s, owner)}


def events_of(client: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    """The job's events in the streams, in order (other tests write theirs there too)."""
    return [e for e in all_events(client) if e["data"]["job_id"] == job_id]


def state(client: redis.Redis, job_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(keys.job(job_id)).items()}


def test_hard_bounce_is_recorded_once_suppressed_and_marks_the_job(
    redis_url: str, redis_client: redis.Redis, store: Store
) -> None:
    ingest = make_ingest(redis_url, redis_client, store)
    job_id, rp = sent_job(redis_client, ["Gone@Example.org"])
    raw = render("postfix-userunknown", RETURN_PATH=rp, RECIPIENT="gone@example.org")
    outcome = ingest.handle(smtp(raw, rp))
    assert (outcome.result, outcome.rows, outcome.suppressed) == ("recorded", 1, 1)
    assert ingest.handle(smtp(raw, rp)).rows == 1  # the same report again changes nothing
    (row,) = rows(store, job_id)
    assert row["recipient"] == "gone@example.org"
    assert (row["kind"], row["action"], row["reply_code"], row["enhanced_status"]) == (
        "bounced",
        "failed",
        550,
        "5.1.1",
    )
    assert (row["reason"], row["hard"], row["owner"], row["channel"]) == (
        "userunknown",
        True,
        "acme",
        "msc",
    )
    assert "User unknown in local recipient table" in str(row["diagnostic"])
    assert row["subject"] == "Your invoice"
    assert row["identity"] == "Acme Support <support@acme.example>"
    assert row["job_metadata"] == {"conversation": "c-9"}
    assert suppressions(store) == {"gone@example.org": "userunknown"}
    assert suppressions(store, "someone-else") == {}
    st = state(redis_client, job_id)
    assert st["state"] == "bounced" and st["bounced"] == "1"
    assert "userunknown" in st["last_error"]
    # the report ingested twice: its event twice, with the same id (receivers deduplicate)
    first, again = events_of(redis_client, job_id)
    assert first["type"] == again["type"] == "message.bounced"
    assert (first["id"], first["data"]) == (again["id"], again["data"])
    assert first["data"] | {"diagnostic": ""} == {
        "job_id": job_id,
        "owner": "acme",
        "channel": "msc",
        "recipients": ["gone@example.org"],
        "metadata": {"conversation": "c-9"},
        "reason": "userunknown",
        "enhanced_status": "5.1.1",
        "reply_code": 550,
        "hard": True,
        "diagnostic": "",
        "suppressed": True,
    }


def test_soft_bounce_is_recorded_but_not_suppressed(
    redis_url: str, redis_client: redis.Redis, sqlite_store: Store
) -> None:
    ingest = make_ingest(redis_url, redis_client, sqlite_store)
    job_id, rp = sent_job(redis_client, ["full@example.net"])
    raw = render("exim-mailboxfull", RETURN_PATH=rp, RECIPIENT="full@example.net")
    assert ingest.handle(smtp(raw, rp)).result == "recorded"
    (row,) = rows(sqlite_store, job_id)
    assert (row["reason"], row["hard"], row["enhanced_status"], row["reply_code"]) == (
        "mailboxfull",
        False,
        "5.2.2",
        552,
    )
    assert suppressions(sqlite_store) == {}
    assert state(redis_client, job_id)["state"] == "bounced"
    (event,) = events_of(redis_client, job_id)
    assert (event["data"]["reason"], event["data"]["hard"], event["data"]["suppressed"]) == (
        "mailboxfull",
        False,
        False,
    )


def test_delay_warning_is_a_note_and_a_final_expiry_is_a_failure(
    redis_url: str, redis_client: redis.Redis, sqlite_store: Store
) -> None:
    ingest = make_ingest(redis_url, redis_client, sqlite_store)
    job_id, rp = sent_job(redis_client, ["slow@example.org"])
    warning = render("postfix-delayed", RETURN_PATH=rp, RECIPIENT="slow@example.org")
    assert ingest.handle(smtp(warning, rp)).result == "delay"
    assert rows(sqlite_store, job_id) == []
    st = state(redis_client, job_id)
    assert st["state"] == "sent" and "4.4.1" in st["delay_note"]

    expired = render("postfix-expired", RETURN_PATH=rp, RECIPIENT="slow@example.org")
    assert ingest.handle(smtp(expired, rp)).result == "recorded"
    (row,) = rows(sqlite_store, job_id)
    assert (row["reason"], row["action"], row["hard"]) == ("expired", "failed", False)
    assert state(redis_client, job_id)["state"] == "bounced"


def test_feedback_loop_report_is_a_complaint_found_by_the_quoted_return_path(
    redis_url: str, redis_client: redis.Redis, sqlite_store: Store
) -> None:
    ingest = make_ingest(redis_url, redis_client, sqlite_store)
    job_id, rp = sent_job(redis_client, ["angry@example.com"])
    raw = render("arf-abuse", RETURN_PATH=rp, RECIPIENT="angry@example.com")
    # feedback loops report to the address registered with the ISP, not to the return path
    outcome = ingest.handle(smtp(raw, f"fbl@{DOMAIN}"))
    assert (outcome.result, outcome.rows, outcome.suppressed) == ("complaint", 1, 1)
    (row,) = rows(sqlite_store, job_id)
    assert (row["kind"], row["reason"], row["recipient"]) == (
        "complaint",
        "feedback",
        "angry@example.com",
    )
    assert suppressions(sqlite_store) == {"angry@example.com": "complaint:abuse"}
    st = state(redis_client, job_id)
    assert st["state"] == "sent" and st["complaint"] == "abuse"
    (event,) = events_of(redis_client, job_id)
    assert event["type"] == "message.complained"
    assert event["data"]["recipients"] == ["angry@example.com"]
    assert (event["data"]["feedback_type"], event["data"]["suppressed"]) == ("abuse", True)


def test_auto_reply_is_ignored(
    redis_url: str, redis_client: redis.Redis, sqlite_store: Store
) -> None:
    ingest = make_ingest(redis_url, redis_client, sqlite_store)
    job_id, rp = sent_job(redis_client, ["bob@example.org"])
    raw = render("vacation", RETURN_PATH=rp, RECIPIENT="bob@example.org")
    assert ingest.handle(smtp(raw, rp)).result == "autoreply"
    assert rows(sqlite_store, job_id) == [] and suppressions(sqlite_store) == {}
    assert state(redis_client, job_id)["state"] == "sent"


def test_forged_token_is_dropped_even_when_the_body_quotes_a_genuine_one(
    redis_url: str, redis_client: redis.Redis, sqlite_store: Store
) -> None:
    ingest = make_ingest(redis_url, redis_client, sqlite_store)
    job_id, genuine = sent_job(redis_client, ["victim@example.org"])
    forged = forged_return_path(DOMAIN)
    raw = render("postfix-userunknown", RETURN_PATH=genuine, RECIPIENT="victim@example.org")
    raw = raw.replace(b"To: " + genuine.encode(), b"To: " + forged.encode(), 1)
    with capture_logs() as logs:
        outcome = ingest.handle(smtp(raw, forged))
    assert (outcome.result, outcome.why) == ("dropped", "forged_token")
    assert rows(sqlite_store, job_id) == [] and suppressions(sqlite_store) == {}
    assert state(redis_client, job_id)["state"] == "sent"
    dropped = [e for e in logs if e["event"] == "bounce_dropped"]
    assert dropped and dropped[0]["why"] == "forged_token"
    assert "victim@example.org" not in repr(logs) and forged not in repr(logs)

    # a token signed for another bounce domain, or no token at all: dropped as well
    other = render("postfix-userunknown", RETURN_PATH="b+abc@elsewhere.example", RECIPIENT="x@y.z")
    assert ingest.handle(smtp(other, "postmaster@" + DOMAIN)).why == "no_token"
    assert redis_client.hget(keys.COUNTERS, "bounces_forged_token") == b"1"


def test_previous_key_still_verifies_and_mailbox_reports_use_their_headers(
    redis_url: str, redis_client: redis.Redis, sqlite_store: Store
) -> None:
    ingest = make_ingest(redis_url, redis_client, sqlite_store)
    job_id, rp = sent_job(redis_client, ["old@example.org"], key=OLD_SECRET)
    raw = render("postfix-userunknown", RETURN_PATH=rp, RECIPIENT="old@example.org")
    # from an IMAP mailbox there is no SMTP envelope: Delivered-To/To name the return path
    outcome = ingest.handle(InboundMessage(raw=raw, source="imap"))
    assert (outcome.result, outcome.job_id) == ("recorded", job_id)


def test_a_bounce_through_a_verified_domains_return_path_is_recorded(
    redis_url: str, redis_client: redis.Redis, sqlite_store: Store
) -> None:
    # MSC mail from a verified sending domain has its return path at bounces.<domain>, a CNAME
    # to the bounce domain (worker/domains/): the report reaches us there, or names it inside
    ingest = make_ingest(redis_url, redis_client, sqlite_store)
    job_id, _ = sent_job(redis_client, ["gone@example.org"])
    rp = return_path(uuid.UUID(job_id), SECRET, "bounces.shop.example", "gone@example.org")
    raw = render("postfix-userunknown", RETURN_PATH=rp, RECIPIENT="gone@example.org")
    outcome = ingest.handle(smtp(raw, rp))
    assert (outcome.result, outcome.job_id, outcome.rows) == ("recorded", job_id, 1)
    second, _ = sent_job(redis_client, ["gone@example.org"])
    rp2 = return_path(uuid.UUID(second), SECRET, "bounces.shop.example", "gone@example.org")
    raw2 = render("postfix-userunknown", RETURN_PATH=rp2, RECIPIENT="gone@example.org")
    found = ingest.handle(InboundMessage(raw=raw2, source="imap"))  # no envelope: the headers
    assert (found.result, found.job_id) == ("recorded", second)
    forged = rp.replace(rp[2:8], "aaaaaa")
    raw3 = render("postfix-userunknown", RETURN_PATH=forged, RECIPIENT="gone@example.org")
    assert ingest.handle(smtp(raw3, forged)).result == "dropped"


def test_reported_recipients_must_belong_to_the_job(
    redis_url: str, redis_client: redis.Redis, sqlite_store: Store
) -> None:
    ingest = make_ingest(redis_url, redis_client, sqlite_store)
    # several recipients, a token issued before return paths named the recipient: any of them
    # could have written the report, so it is a note on the job only
    job_id, rp = sent_job(redis_client, ["a@example.org", "b@example.org"])
    raw = render("postfix-userunknown", RETURN_PATH=rp, RECIPIENT="b@example.org")
    assert ingest.handle(smtp(raw, rp)).why == "legacy_token"
    assert rows(sqlite_store, job_id) == [] and suppressions(sqlite_store) == {}
    # a recipient's own return path touches that recipient only, whatever the report names
    a_rp = return_path(uuid.UUID(job_id), SECRET, DOMAIN, "a@example.org")
    raw = render("postfix-userunknown", RETURN_PATH=a_rp, RECIPIENT="b@example.org")
    assert ingest.handle(smtp(raw, a_rp)).result == "recorded"
    assert [r["recipient"] for r in rows(sqlite_store, job_id)] == ["a@example.org"]
    assert "b@example.org" not in str(suppressions(sqlite_store))
    # one recipient: the report is about it even when it names the forwarded address
    job_id, rp = sent_job(redis_client, ["alias@corp.example"])
    raw = render("postfix-userunknown", RETURN_PATH=rp, RECIPIENT="alias.forwarded@mail.example")
    assert ingest.handle(smtp(raw, rp)).result == "recorded"
    assert [r["recipient"] for r in rows(sqlite_store, job_id)] == ["alias@corp.example"]


def test_unknown_job_and_other_channels_are_dropped(
    redis_url: str, redis_client: redis.Redis, sqlite_store: Store
) -> None:
    ingest = make_ingest(redis_url, redis_client, sqlite_store)
    rp = return_path(uuid.uuid4(), SECRET, DOMAIN)  # genuine token, but no such job (expired)
    raw = render("postfix-userunknown", RETURN_PATH=rp, RECIPIENT="x@example.org")
    assert ingest.handle(smtp(raw, rp)).why == "job_unknown"
    _, rp = sent_job(redis_client, ["x@example.org"], channel="gmail")
    raw = render("postfix-userunknown", RETURN_PATH=rp, RECIPIENT="x@example.org")
    assert ingest.handle(smtp(raw, rp)).why == "not_msc"
    with sqlite_store.session() as s:
        assert repo.list_failed_sends(s).items == []


def test_feedback_report_counts_only_through_the_token_of_its_quoted_original(
    redis_url: str, redis_client: redis.Redis, sqlite_store: Store
) -> None:
    """A token anywhere else in a report to the FBL address (its own headers, its notice, its
    machine-readable part, a part after the quoted original) does not make it count."""
    ingest = make_ingest(redis_url, redis_client, sqlite_store)
    job_id, rp = sent_job(redis_client, ["victim@example.com"])
    other_rp = return_path(uuid.uuid4(), SECRET, DOMAIN, "someone@example.com")  # no such job
    genuine = render("arf-abuse", RETURN_PATH=rp, RECIPIENT="victim@example.com")
    # the quoted original carries a token that is not this job's; ours is only elsewhere
    base = genuine.replace(b"Return-Path: <" + rp.encode(), b"Return-Path: <" + other_rp.encode())
    base = base.replace(b"Original-Mail-From: <" + rp.encode(), b"Original-Mail-From: <>")
    assert base.count(rp.encode()) == 0
    head, sep, body = base.partition(b"\r\n\r\n")
    token_line = b"X-Original-Return-Path: <" + rp.encode() + b">"
    masked = b"X-Scanner: content-type: message/rfc822 " + rp.encode()
    variants = {
        "own header": head + b"\r\n" + token_line + sep + body,
        "own header that names a quoted type": head + b"\r\n" + masked + sep + body,
        "notice": base.replace(b"marked it as spam.", b"marked it as spam. " + rp.encode()),
        "feedback part": base.replace(
            b"Original-Mail-From: <>", b"Original-Mail-From: <" + rp.encode() + b">"
        ),
        "part after the original": base.replace(
            b"------=_fbl_boundary_7731--",
            b"------=_fbl_boundary_7731\r\nContent-Type: text/plain\r\n\r\n"
            + token_line
            + b"\r\n\r\n------=_fbl_boundary_7731--",
        ),
    }
    for where, raw in variants.items():
        outcome = ingest.handle(smtp(raw, f"fbl@{DOMAIN}"))
        assert outcome.result == "dropped", (where, outcome)
        assert outcome.job_id in (None, "") or outcome.job_id != job_id, where
    assert rows(sqlite_store, job_id) == [] and suppressions(sqlite_store) == {}
    assert "complaint" not in state(redis_client, job_id)
    # the same report with our token in its quoted original counts
    assert ingest.handle(smtp(genuine, f"fbl@{DOMAIN}")).result == "complaint"
    assert [r["recipient"] for r in rows(sqlite_store, job_id)] == ["victim@example.com"]


def test_a_mail_to_the_unsubscribe_address_read_from_a_mailbox_unsubscribes(
    redis_url: str, redis_client: redis.Redis, sqlite_store: Store
) -> None:
    # bounce-poll reads the bounce domain's mailbox: no envelope, so the address is the one its
    # Delivered-To (or To) names; the token still decides
    from worker.message.unsubscribe import make_token

    ingest = make_ingest(redis_url, redis_client, sqlite_store)
    job_id = str(uuid.uuid4())
    token = make_token(SECRET, job_id, "acme", "reader@example.org")
    raw = (
        f"Delivered-To: u@{DOMAIN}\r\nFrom: Reader <reader@example.org>\r\n"
        f"To: Unsubscribe <U@{DOMAIN}>\r\nSubject: unsubscribe {token}\r\n\r\nplease stop\r\n"
    ).encode()
    outcome = ingest.handle(InboundMessage(raw=raw, source="imap"))
    assert (outcome.result, outcome.job_id) == ("unsubscribed", job_id)
    assert suppressions(sqlite_store) == {"reader@example.org": "unsubscribe"}


def test_a_mail_to_the_unsubscribe_address_unsubscribes_through_its_token(
    redis_url: str, redis_client: redis.Redis, sqlite_store: Store
) -> None:
    from worker.message.unsubscribe import make_token

    ingest = make_ingest(redis_url, redis_client, sqlite_store)
    job_id = str(uuid.uuid4())
    token = make_token(OLD_SECRET, job_id, "acme", "Reader@Example.org")  # an older key's link

    def mail(subject: str) -> InboundMessage:
        raw = (
            f"From: Reader <reader@example.org>\r\nTo: u@{DOMAIN}\r\nSubject: {subject}\r\n"
            "\r\nplease stop\r\n"
        ).encode()
        return smtp(raw, f"u@{DOMAIN}")

    forged = token[:-1] + ("B" if token.endswith("A") else "A")
    assert ingest.handle(mail(f"unsubscribe {forged}")).result == "dropped"
    assert ingest.handle(mail("unsubscribe")).result == "dropped"
    assert suppressions(sqlite_store) == {}
    outcome = ingest.handle(mail(f"unsubscribe {token}"))
    assert (outcome.result, outcome.job_id) == ("unsubscribed", job_id)
    assert suppressions(sqlite_store) == {"reader@example.org": "unsubscribe"}
    (event,) = events_of(redis_client, job_id)
    assert event["type"] == "message.unsubscribed"
    assert event["data"]["recipients"] == ["reader@example.org"]
