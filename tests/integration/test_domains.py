"""Verified sending domains on MSC: a domain added through the CLI and the API, its records
served by a local authoritative DNS server, verification passing only once they are published,
then mail from the domain checked on arrival at the relay as a receiver would: both DKIM
signatures verified by dkimpy against the published keys, the envelope and From aligned for
DMARC, no Sender. Identities elsewhere keep the operator's signature."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dkim
import httpx
import pytest

from tests.support.api import bearer, new_key, serve
from tests.support.dns_server import DnsServer
from tests.support.fleet import Fleet, running_fleet
from tests.support.relay import Received, Relay
from tests.support.services import free_port
from worker.api.app import create_app
from worker.message.returnpath import token_from_address
from worker.store import open_store

OPERATOR_BOUNCES = "bounces.operator.test"
API_PORT = free_port()  # the API of these tests, at the fleet's MAILDISPATCH_PUBLIC_URL


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dfleet(
    tmp_path_factory: pytest.TempPathFactory, session_relay: Relay, dns_server: DnsServer
) -> Iterator[Fleet]:
    env = {
        "MAILDISPATCH_DNS_NAMESERVERS": dns_server.nameserver,
        "MAILDISPATCH_DOMAIN_REFRESH_INTERVAL": "0.5s",
        "MAILDISPATCH_PUBLIC_URL": f"http://127.0.0.1:{API_PORT}",
        # a domain mail may come from (.test may not): the confirmation mail's sender
        "MAILDISPATCH_MSC_DOMAIN": "mail.operator.example",
    }
    with running_fleet(
        tmp_path_factory.mktemp("domains"), relay_url=session_relay.url, env=env
    ) as fleet:
        yield fleet


@pytest.fixture
def owner(dfleet: Fleet, relay: Relay, dns_server: DnsServer) -> Iterator[str]:
    dns_server.clear()
    name = f"acct-{uuid.uuid4().hex[:8]}"
    yield name
    dfleet.forget(name)


def _domain() -> str:
    return f"shop-{uuid.uuid4().hex[:8]}.example"


def _publish(dns_server: DnsServer, shown: dict[str, Any]) -> None:
    for record in shown["records"]:
        dns_server.publish(record["name"], record["type"], record["value"])


def _receiver_dns(dns_server: DnsServer) -> Any:
    """dkimpy's key lookup, answered from the published zone (a receiver's resolver)."""

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        found = dns_server.lookup(name.decode().rstrip("."), "TXT")
        return found[0].encode() if found else b""

    return lookup


def _send(fleet: Fleet, owner: str, identity: str, relay: Relay) -> Received:
    job_id = fleet.dispatcher.send(
        {
            "owner": owner,
            "identity": f"Shop <{identity}>",
            "to": ["buyer@example.org"],
            "subject": "Your order",
            "text": "Thanks\n",
        }
    )
    assert fleet.wait_final([job_id]) == {str(job_id): "sent"}
    (got,) = [m for m in relay.handler.messages if str(job_id) in str(m.message["Message-ID"])]
    return got


def test_mail_from_a_verified_domain_passes_dkim_and_aligns(
    dfleet: Fleet, relay: Relay, dns_server: DnsServer, owner: str
) -> None:
    domain = _domain()
    shown = dfleet.cli_json("domains", "add", "--owner", owner, "--domain", domain)
    assert shown["state"] == "pending" and shown["domain"] == domain
    assert sorted(r["type"] for r in shown["records"]) == ["CNAME", "TXT", "TXT", "TXT"]
    cname = next(r for r in shown["records"] if r["type"] == "CNAME")
    assert (cname["name"], cname["value"]) == (f"bounces.{domain}", OPERATOR_BOUNCES)
    kinds = sorted(
        r["value"].split(";")[1].strip() for r in shown["records"] if "DKIM1" in r["value"]
    )
    assert kinds == ["k=ed25519", "k=rsa"]

    # not published yet: not verified, and the operator still signs
    pending = dfleet.cli("domains", "verify", domain, "--json")
    assert pending.returncode == 1
    before = _send(dfleet, owner, f"orders@{domain}", relay)
    assert before.message["Sender"] is not None
    assert before.mail_from.endswith(f"@{OPERATOR_BOUNCES}")

    # half published (the keys, not the return path): still not verified
    for record in shown["records"]:
        if record["type"] == "TXT" and "DKIM1" in record["value"]:
            dns_server.publish(record["name"], record["type"], record["value"])
    assert dfleet.cli("domains", "verify", domain).returncode == 1
    dns_server.clear()
    _publish(dns_server, shown)
    done = dfleet.cli_json("domains", "verify", domain)
    assert done["state"] == "verified"
    assert {r["state"] for r in done["records"]} == {"found"}

    time.sleep(1.5)  # the worker reads verified domains every 0.5 s here (30 s by default)
    got = _send(dfleet, owner, f"orders@{domain}", relay)
    msg = got.message
    assert msg["Sender"] is None  # no "via": nothing but the customer's domain
    assert str(msg["From"]) == f"Shop <orders@{domain}>"
    assert msg["Message-ID"].endswith(f"@{domain}>")
    # SPF: the envelope is at bounces.<domain> (a CNAME to the operator's bounce domain), whose
    # organizational domain is the From's: relaxed alignment
    assert got.mail_from.endswith(f"@bounces.{domain}")
    keys = dfleet.settings.verifying_keys()
    token = token_from_address(got.mail_from, keys, OPERATOR_BOUNCES, "bounces")
    assert token is not None and token.names("buyer@example.org")
    # DKIM: two signatures, d= the From domain, each verified against the published key
    signatures = msg.get_all("DKIM-Signature")
    assert len(signatures) == 2
    assert {s.split("a=")[1].split(";")[0] for s in signatures} == {"rsa-sha256", "ed25519-sha256"}
    assert all(f"d={domain}" in s.replace(" ", "") for s in signatures)
    verifier = dkim.DKIM(got.data)
    lookup = _receiver_dns(dns_server)
    assert verifier.verify(idx=0, dnsfunc=lookup) and verifier.verify(idx=1, dnsfunc=lookup)


def test_another_owner_cannot_send_as_the_domain_and_a_lost_record_fails_it(
    dfleet: Fleet, relay: Relay, dns_server: DnsServer, owner: str
) -> None:
    domain = _domain()
    shown = dfleet.cli_json("domains", "add", "--owner", owner, "--domain", domain)
    refused = dfleet.cli("domains", "add", "--owner", f"{owner}-x", "--domain", domain.upper())
    assert refused.returncode == 2 and "another owner" in refused.stderr
    _publish(dns_server, shown)
    assert dfleet.cli_json("domains", "verify", domain)["state"] == "verified"
    time.sleep(1.5)

    # someone else's job with an identity at the domain: the operator's signature, not theirs
    other = _send(dfleet, f"{owner}-x", f"orders@{domain}", relay)
    assert other.message["Sender"] is not None
    assert all(
        f"d={domain}" not in s.replace(" ", "") for s in other.message.get_all("DKIM-Signature", [])
    )
    # a subdomain identity of the owner is signed as the domain
    sub = _send(dfleet, owner, f"news@mail.{domain}", relay)
    assert sub.message["Sender"] is None and sub.mail_from.endswith(f"@bounces.{domain}")

    # the owner removes the return-path CNAME: the next check fails the domain and the
    # operator signs again
    dns_server.clear()
    _publish(dns_server, {"records": [r for r in shown["records"] if r["type"] != "CNAME"]})
    out = dfleet.cli("domains", "verify", domain, "--json")
    failed = json.loads(out.stdout)
    assert out.returncode == 1 and failed["state"] == "failed"
    assert [r["state"] for r in failed["records"] if r["type"] == "CNAME"] == ["missing"]
    time.sleep(1.5)
    after = _send(dfleet, owner, f"orders@{domain}", relay)
    assert after.message["Sender"] is not None


def test_domains_over_http_with_owner_bound_keys(
    dfleet: Fleet, dns_server: DnsServer, owner: str
) -> None:
    store = open_store(dfleet.database_url)
    mine, theirs = (
        new_key(store, f"k-{owner}", owner=owner),
        new_key(store, f"o-{owner}", owner="x"),
    )
    domain = _domain()
    with serve(create_app(dfleet.settings), API_PORT) as url, httpx.Client(base_url=url) as c:
        made = c.post("/v1/domains", json={"owner": owner, "domain": domain}, headers=bearer(mine))
        assert made.status_code == 201 and made.json()["state"] == "pending"
        again = c.post("/v1/domains", json={"owner": owner, "domain": domain}, headers=bearer(mine))
        assert again.json()["records"] == made.json()["records"]  # the same keys
        other = {"owner": "x", "domain": domain}
        assert c.post("/v1/domains", json=other, headers=bearer(theirs)).status_code == 422
        assert c.post("/v1/domains", json=other, headers=bearer(mine)).status_code == 403
        bad = {"owner": owner, "domain": "not a domain"}
        assert c.post("/v1/domains", json=bad, headers=bearer(mine)).status_code == 422
        assert c.get(f"/v1/domains/{domain}", headers=bearer(theirs)).status_code == 404
        assert c.post(f"/v1/domains/{domain}/verify", headers=bearer(theirs)).status_code == 404
        checked = c.post(f"/v1/domains/{domain}/verify", headers=bearer(mine)).json()
        assert checked["state"] == "pending"
        assert {r["state"] for r in checked["records"]} == {"missing"}
        _publish(dns_server, made.json())
        verified = c.post(f"/v1/domains/{domain}/verify", headers=bearer(mine)).json()
        assert verified["state"] == "verified" and verified["verified_at"]
        listed = c.get("/v1/domains", headers=bearer(mine)).json()
        assert [d["domain"] for d in listed] == [domain]
        assert c.get("/v1/domains", headers=bearer(theirs)).json() == []
        person = {"owner": owner, "address": f"Bob.{owner}@freemail.example"}
        asked = c.post("/v1/identities", json=person, headers=bearer(mine))
        assert asked.status_code == 202 and asked.json()["state"] == "pending"
        assert asked.json()["address"] == person["address"].lower()
        assert c.post("/v1/identities", json=person, headers=bearer(theirs)).status_code == 403
        bad = {"owner": owner, "address": "not an address"}
        assert c.post("/v1/identities", json=bad, headers=bearer(mine)).status_code == 422
        assert [a["state"] for a in c.get("/v1/identities", headers=bearer(mine)).json()] == [
            "pending"
        ]
        assert c.get("/v1/identities", headers=bearer(theirs)).json() == []
        member = f"{len(owner)}:{owner}:@{domain}"
        assert dfleet.redis.sismember("md:senders", member)  # verified: producers know it
        assert c.delete(f"/v1/domains/{domain}", headers=bearer(theirs)).status_code == 404
        assert c.delete(f"/v1/domains/{domain}", headers=bearer(mine)).status_code == 204
        assert c.get(f"/v1/domains/{domain}", headers=bearer(mine)).status_code == 404
        assert not dfleet.redis.sismember("md:senders", member)


def test_the_scheduler_rechecks_domains_when_due(dfleet: Fleet, dns_server: DnsServer) -> None:
    from datetime import timedelta

    from worker.accounts.vault import Vault
    from worker.domains import manage
    from worker.store.models import utcnow

    store = open_store(dfleet.database_url)
    settings = dfleet.settings
    with store.session() as session:
        row = manage.add(session, Vault.from_settings(settings), "recheck-owner", _domain())
        _publish(dns_server, manage.shown(row, settings))
        name = row.domain
    try:

        def state() -> str | None:
            found = manage.get(session, name)
            return found.state if found else None

        with store.session() as session:
            assert manage.recheck(session, settings) >= 1  # never checked: due
            assert state() == "verified"
        dns_server.clear()
        with store.session() as session:
            manage.recheck(session, settings)  # checked just now: not due yet
            assert state() == "verified"
            later = utcnow() + timedelta(seconds=settings.domain_recheck_interval + 1)
            manage.recheck(session, settings, now=later)
            assert state() == "failed"
    finally:
        dfleet.forget("recheck-owner")


def _job(owner: str, identity: str, **extra: Any) -> dict[str, Any]:
    return {"owner": owner, "identity": identity, "to": ["b@example.org"], "text": "x"} | extra


def test_with_verification_required_msc_takes_only_verified_identities(
    dfleet: Fleet, relay: Relay, dns_server: DnsServer, owner: str
) -> None:
    from producers.client import Dispatcher
    from producers.job import InvalidJob
    from tests.support.env import make_settings

    strict = Dispatcher(make_settings(dfleet.env, require_verified_identities=True))
    try:
        domain = _domain()
        shown = dfleet.cli_json("domains", "add", "--owner", owner, "--domain", domain)
        with pytest.raises(InvalidJob) as refused:
            strict.send(_job(owner, f"orders@{domain}"))
        assert refused.value.errors[0].field == "identity"
        _publish(dns_server, shown)
        assert dfleet.cli_json("domains", "verify", domain)["state"] == "verified"
        assert strict.send(_job(owner, f"orders@{domain}"))  # and its subdomains
        assert strict.send(_job(owner, f"news@mail.{domain}"))
        with pytest.raises(InvalidJob):  # someone else's domain
            strict.send(_job(f"{owner}-x", f"orders@{domain}"))
        assert strict.send(_job(owner, "mailer@mail.operator.example"))  # the operator's own
        assert strict.send(_job(owner, "me@elsewhere.example", channel="gmail"))  # not MSC

        # a single address: refused until its mailbox confirms the link mailed to it
        person = f"ann.{owner}@freemail.example"
        with pytest.raises(InvalidJob):
            strict.send(_job(owner, person))
        asked = dfleet.cli_json("identities", "add", "--owner", owner, "--address", person)
        assert asked["state"] == "pending"
        assert dfleet.wait_final([asked["confirmation_job"]]) == {asked["confirmation_job"]: "sent"}
        (mail,) = [m for m in relay.handler.messages if m.rcpt_tos == [person]]
        link = next(w for w in mail.message.get_content().split() if "/confirm/" in w)
        with serve(create_app(dfleet.settings), API_PORT):
            page = httpx.get(link)  # a scanner's fetch: nothing confirmed
            assert page.status_code == 200 and "<form" in page.text
            with pytest.raises(InvalidJob):
                strict.send(_job(owner, person))
            assert httpx.post(link).status_code == 200
            assert httpx.post(link + "x").status_code == 404
        assert strict.send(_job(owner, person.upper()))
        listed = dfleet.cli_json("identities", "list", "--owner", owner)
        assert [(a["address"], a["state"]) for a in listed] == [(person, "confirmed")]

        # Redis lost the copy: refused until the scheduler's hourly rewrite, or `domains sync`
        dfleet.redis.delete("md:senders")
        with pytest.raises(InvalidJob):
            strict.send(_job(owner, f"orders@{domain}"))
        assert dfleet.cli("domains", "sync").returncode == 0
        assert strict.send(_job(owner, f"orders@{domain}"))
        assert strict.send(_job(owner, person))
    finally:
        strict.close()
