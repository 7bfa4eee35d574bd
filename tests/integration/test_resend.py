"""Resend is idempotent: a double click sends once, over the HTTP API and on the page; the stored
job's recipients resend however they were written (``Name <addr>`` included).

A real uvicorn server, real Redis, a real SQLite store; no worker: what is enqueued stays on the
queue, where the tests count it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from config.settings import Settings
from tests.integration.test_http_page import OWNER, csrf_of, signed_in
from tests.support.api import bearer, new_key, serve
from tests.support.env import SECRET
from tests.support.queue import raw_messages, task_body
from worker.api.app import create_app
from worker.store import Store, open_store, repo


@pytest.fixture
def site(redis_client: redis.Redis, redis_url: str, tmp_path: Any) -> Iterator[dict[str, Any]]:
    settings = Settings(
        broker_url=redis_url,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        secret_key=SECRET,
        _env_file=None,  # type: ignore[call-arg]
    )
    store = open_store(settings.database_url)
    with serve(create_app(settings)) as url:
        yield {"url": url, "store": store, "redis": redis_client, "key": new_key(store, "desk")}
    store.dispose()


def queued(client: redis.Redis) -> list[dict[str, Any]]:
    """Every job waiting on the MSC queue."""
    return [job for raw in raw_messages(client, "mail.msc") for job in task_body(raw)[0][0]]


def stored_job(recipients: dict[str, list[Any]]) -> dict[str, Any]:
    """A job as a producer gave it (strings as written), as the store keeps it."""
    return {
        "id": str(uuid.uuid4()),
        "owner": OWNER,
        "channel": "msc",
        "identity": "Ann <ann@acme.example>",
        "subject": "Invoice",
        "text": "Hello",
        "metadata": {"order": 7},
    } | recipients


def failed_row(store: Store, job: dict[str, Any], recipient: str) -> int:
    row = {
        "job_id": job["id"],
        "owner": OWNER,
        "channel": "msc",
        "recipient": recipient,
        "kind": "rejected",
        "reply_code": 550,
        "enhanced_status": "5.1.1",
        "reason": "userunknown",
        "hard": True,
        "diagnostic": "550 5.1.1 User unknown",
        "subject": "Invoice",
        "identity": "Ann <ann@acme.example>",
        "job_metadata": job.get("metadata", {}),
        "job": job,
    }
    with store.session() as session:
        repo.record_failed_sends(session, [row])
        (found,) = [
            r for r in repo.failed_sends_for_job(session, job["id"]) if r.recipient == recipient
        ]
        return found.id


def test_a_double_click_on_the_api_sends_once(site: dict[str, Any]) -> None:
    job = stored_job({"to": ["bob@example.org"]})
    failed_id = failed_row(site["store"], job, "bob@example.org")
    headers = bearer(site["key"])

    def click(_: int) -> httpx.Response:
        return httpx.post(
            f"{site['url']}/v1/failed-sends/{failed_id}/resend", headers=headers, timeout=30
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(click, range(8)))
    accepted = [a for a in answers if a.status_code == 202]
    # a click while another is still enqueueing may be told so (409); none enqueues another job
    assert accepted and all(a.status_code in (202, 409) for a in answers), answers
    assert len({a.json()["id"] for a in accepted}) == 1
    (resent,) = queued(site["redis"])
    assert resent["id"] == accepted[0].json()["id"]
    with site["store"].session() as session:
        assert repo.get_failed_send(session, failed_id).resend_job_id == resent["id"]  # type: ignore[union-attr]


def test_a_click_after_the_link_was_lost_answers_the_same_job(site: dict[str, Any]) -> None:
    job = stored_job({"to": ["bob@example.org"]})
    failed_id = failed_row(site["store"], job, "bob@example.org")
    url = f"{site['url']}/v1/failed-sends/{failed_id}/resend"
    first = httpx.post(url, headers=bearer(site["key"])).json()["id"]
    with site["store"].session() as session:  # as if the link's write had failed after the send
        repo.get_failed_send(session, failed_id).resend_job_id = None  # type: ignore[union-attr]
    again = httpx.post(url, headers=bearer(site["key"]))
    assert again.status_code == 202 and again.json()["id"] == first
    assert len(queued(site["redis"])) == 1


def test_recipients_written_as_name_and_address_resend(site: dict[str, Any]) -> None:
    job = stored_job(
        {
            "to": ['"Bob Example" <Bob@Example.ORG>', "Carol <carol@example.org>"],
            "cc": ["Dan <dan@example.org>"],
            "bcc": ["eve@example.org"],
        }
    )
    rows = {
        rcpt: failed_row(site["store"], job, rcpt)
        for rcpt in ("Bob@example.org", "dan@example.org", "eve@example.org")
    }
    ids = {}
    for rcpt, failed_id in rows.items():
        res = httpx.post(
            f"{site['url']}/v1/failed-sends/{failed_id}/resend", headers=bearer(site["key"])
        )
        assert res.status_code == 202, res.text
        ids[rcpt] = res.json()["id"]
    by_id = {j["id"]: j for j in queued(site["redis"])}
    bob, dan, eve = (by_id[ids[r]] for r in rows)
    assert bob["to"] == [{"name": "Bob Example", "address": "Bob@example.org"}]
    assert not bob.get("cc") and not bob.get("bcc")
    assert dan["cc"] == [{"name": "Dan", "address": "dan@example.org"}] and not dan.get("to")
    assert eve["bcc"] == [{"address": "eve@example.org"}] and not eve.get("to")
    for resent in (bob, dan, eve):
        assert resent["subject"] == "Invoice" and resent["text"] == "Hello"
        assert resent["metadata"] == {"order": 7, "resend_of": rows[_rcpt(resent)]}
        assert resent["identity"] == {"name": "Ann", "address": "ann@acme.example"}


def _rcpt(job: dict[str, Any]) -> str:
    (box,) = [*job.get("to", []), *job.get("cc", []), *job.get("bcc", [])]
    return str(box["address"])


def test_a_row_whose_job_was_not_kept_answers_409(site: dict[str, Any]) -> None:
    job = stored_job({"to": ["bob@example.org"]})
    failed_id = failed_row(site["store"], job | {"id": job["id"]}, "bob@example.org")
    with site["store"].session() as session:
        from worker.store.models import JobContent

        session.query(JobContent).delete()  # purged by retention
    res = httpx.post(
        f"{site['url']}/v1/failed-sends/{failed_id}/resend", headers=bearer(site["key"])
    )
    assert res.status_code == 409 and "RETENTION" in res.json()["detail"]
    assert queued(site["redis"]) == []


def test_a_double_click_on_the_page_sends_once(site: dict[str, Any]) -> None:
    job = stored_job({"to": ["Bob <bob@example.org>"]})
    failed_id = failed_row(site["store"], job, "bob@example.org")
    with signed_in(site["url"], site["key"]) as desk:
        page = desk.get("/failed-sends", params={"owner": OWNER}).text
        assert "Resend</button>" in page
        form = {"csrf": csrf_of(page), "owner": OWNER}
        with ThreadPoolExecutor(2) as pool:
            clicks = list(
                pool.map(
                    lambda _: desk.post(f"/failed-sends/{failed_id}/resend", data=form), [0, 1]
                )
            )
        assert [c.status_code for c in clicks] in ([303, 303], [303, 409], [409, 303])
        again = desk.post(f"/failed-sends/{failed_id}/resend", data=form)  # a third, later
        assert again.status_code == 303
    (resent,) = queued(site["redis"])
    with site["store"].session() as session:
        assert repo.get_failed_send(session, failed_id).resend_job_id == resent["id"]  # type: ignore[union-attr]
