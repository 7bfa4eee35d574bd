"""Headers through a real worker and relay: an IDN recipient is the same A-label in RCPT TO and
in the To header; long and non-ASCII header text arrives folded, with no line over 998 octets;
what cannot be sent (an SMTPUTF8 local part, too many recipients) is refused before enqueueing."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
import redis

from producers.client import Dispatcher
from producers.job import InvalidJob
from tests.integration.test_msc_delivery import job, wait_final
from tests.support.fleet import Fleet
from tests.support.queue import depth
from tests.support.relay import Relay


def test_an_idn_recipient_is_one_address_in_envelope_and_headers(
    fleet: Fleet, relay: Relay
) -> None:
    d = Dispatcher(fleet.settings)
    job_id = d.send(
        job(
            "Jörg <jorg@straße.de>",
            cc=["ann@Bücher.example"],
            identity="Zoë Ünïcode " * 12 + "<support@acme.example>",
            subject="Ärger " * 100,
            headers={"X-Campaign": "spring " * 120},
        )
    )
    assert wait_final(d, [job_id])[str(job_id)]["state"] == "sent"
    # MSC: one transaction per recipient (its own return path), the same message in each
    transactions = relay.handler.messages
    assert sorted(r for t in transactions for r in t.rcpt_tos) == [
        "ann@xn--bcher-kva.example",
        "jorg@xn--strae-oqa.de",
    ]
    assert all(len(t.rcpt_tos) == 1 for t in transactions)
    for got in transactions:
        msg = email.message_from_bytes(got.data, policy=email.policy.default)
        assert [a.addr_spec for a in msg["To"].addresses] == ["jorg@xn--strae-oqa.de"]
        assert [a.addr_spec for a in msg["Cc"].addresses] == ["ann@xn--bcher-kva.example"]
        assert str(msg["Subject"]) == "Ärger " * 100
        assert re.search(rb"\r(?!\n)|(?<!\r)\n", got.data) is None
        assert max(len(line) for line in got.data.split(b"\r\n")) <= 998
    d.close()


def test_what_cannot_be_sent_is_refused_before_enqueueing(
    fleet: Fleet, redis_client: redis.Redis
) -> None:
    d = Dispatcher(fleet.settings)
    queued = depth(fleet.redis, "mail.msc")
    with pytest.raises(InvalidJob, match="SMTPUTF8"):
        d.send(job("zoë@example.org"))
    with pytest.raises(InvalidJob, match="more than 100 recipients"):
        d.send(job("a@example.org", cc=[f"not an address {i}" for i in range(5000)]))
    with pytest.raises(InvalidJob, match="not a valid header name"):
        d.send(job("a@example.org", headers={"X-Tag\n": "v"}))
    assert depth(fleet.redis, "mail.msc") == queued
    d.close()
