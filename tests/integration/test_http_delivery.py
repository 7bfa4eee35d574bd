"""Jobs posted over HTTP to a real MSC worker and relay: delivered, counted on /metrics, failures
readable and resendable through the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import bearer, new_key, serve
from tests.support.fleet import Fleet
from tests.support.relay import Relay
from tests.support.services import wait_for
from worker.api.app import create_app
from worker.store import open_store

FINAL = {"sent", "failed", "suppressed", "bounced"}


@pytest.fixture
def client(fleet: Fleet) -> Iterator[httpx.Client]:
    store = open_store(fleet.database_url)
    key = new_key(store, "http-delivery-test")
    with (
        serve(create_app(fleet.settings)) as url,
        httpx.Client(base_url=url, headers=bearer(key), timeout=20) as c,
    ):
        yield c


def job(to: str) -> dict[str, Any]:
    return {
        "owner": "http-owner",
        "identity": "Acme <support@acme.example>",
        "to": [to],
        "subject": f"Hello {to}",
        "text": "Body\n",
    }


def wait_final(client: httpx.Client, ids: list[str]) -> dict[str, dict[str, Any]]:
    states: dict[str, dict[str, Any]] = {}

    def done() -> bool:
        for i in ids:
            if states.get(i, {}).get("state") not in FINAL:
                states[i] = client.get(f"/v1/messages/{i}").json()
        return all(s.get("state") in FINAL for s in states.values())

    wait_for(done, 60, 0.2, "jobs to reach a final state")
    return states


def samples(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_posted_jobs_are_delivered_and_counted_on_metrics(
    client: httpx.Client, relay: Relay
) -> None:
    jobs = [job(f"user{i}@example.org") for i in range(20)]
    jobs += [job("reject-ghost@example.org"), job("defer1-slow@example.org")]
    res = client.post("/v1/messages:batch", json={"jobs": jobs})
    assert res.status_code == 202, res.text
    ids = res.json()["ids"]
    states = wait_final(client, ids)
    by_rcpt = dict(zip([j["to"][0] for j in jobs], ids, strict=True))
    assert states[by_rcpt["reject-ghost@example.org"]]["state"] == "failed"
    slow = states[by_rcpt["defer1-slow@example.org"]]
    assert (slow["state"], slow["attempts"], slow["channel"]) == ("sent", 2, "msc")
    assert len(relay.handler.messages) == 21

    m = samples(client)  # the workers flush their counts with each batch
    assert m["maildispatch_deliveries_total", (("channel", "msc"), ("outcome", "sent"))] == 21
    assert m["maildispatch_deliveries_total", (("channel", "msc"), ("outcome", "failed"))] == 1
    assert m["maildispatch_deliveries_total", (("channel", "msc"), ("outcome", "retrying"))] == 1
    assert m["maildispatch_delivery_latency_seconds_count", (("channel", "msc"),)] == 21
    assert (
        m["maildispatch_delivery_latency_seconds_bucket", (("channel", "msc"), ("le", "+Inf"))]
        == 21
    )
    assert 0 < m["maildispatch_delivery_latency_seconds_sum", (("channel", "msc"),)] < 21 * 30
    assert m["maildispatch_queue_messages", (("queue", "mail.msc"),)] == 0
    assert m["maildispatch_scheduled_jobs", ()] == 0


def test_a_rejected_job_is_readable_and_resendable_over_http(
    client: httpx.Client, relay: Relay
) -> None:
    (job_id,) = client.post(
        "/v1/messages:batch", json={"jobs": [job("reject-x@example.org")]}
    ).json()["ids"]
    assert wait_final(client, [job_id])[job_id]["state"] == "failed"
    status = client.get(f"/v1/messages/{job_id}").json()
    assert "5.1.1" in status["last_error"]
    (row,) = status["failed_sends"]
    assert row["reason_text"] == "Mailbox does not exist (5.1.1)" and row["hard"] is True
    listed = client.get("/v1/failed-sends", params={"owner": "http-owner"}).json()["items"]
    assert listed[0]["id"] == row["id"]  # newest first

    resent = client.post(f"/v1/failed-sends/{row['id']}/resend")
    assert resent.status_code == 202
    new_id = resent.json()["id"]
    assert wait_final(client, [new_id])[new_id]["state"] == "failed"  # the relay still refuses
    again = client.get(f"/v1/messages/{new_id}").json()["failed_sends"]
    assert again[0]["metadata"] == {"resend_of": row["id"]}
    assert client.get(f"/v1/failed-sends/{row['id']}").json()["resend_job_id"] == new_id


def test_a_suppression_added_over_http_stops_the_next_send_until_removed(
    client: httpx.Client, relay: Relay
) -> None:
    address = "unsubscribed@example.org"
    added = client.post(
        "/v1/suppressions",
        json={"owner": "http-owner", "address": address.upper(), "reason": "unsubscribed"},
    )
    assert added.status_code == 201, added.text
    assert (added.json()["address"], added.json()["reason"]) == (address, "unsubscribed")
    (job_id,) = client.post("/v1/messages:batch", json={"jobs": [job(address)]}).json()["ids"]
    assert wait_final(client, [job_id])[job_id]["state"] == "suppressed"
    (row,) = client.get(f"/v1/messages/{job_id}").json()["failed_sends"]
    assert (row["kind"], row["recipient"]) == ("suppressed", address)
    assert address not in {r for m in relay.handler.messages for r in m.rcpt_tos}

    gone = client.delete("/v1/suppressions", params={"owner": "http-owner", "address": address})
    assert gone.status_code == 204
    (again,) = client.post("/v1/messages:batch", json={"jobs": [job(address)]}).json()["ids"]
    assert wait_final(client, [again])[again]["state"] == "sent"
    assert address in {r for m in relay.handler.messages for r in m.rcpt_tos}
