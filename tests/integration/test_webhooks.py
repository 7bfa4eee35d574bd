"""Webhooks end to end: a real MSC worker and relay, the scheduler, the Procfile's ``events``
line, and a receiver on loopback that verifies every delivery with the ``standardwebhooks``
package, as a service would."""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.api import bearer, new_key, serve
from tests.support.auth_smtpd import Pki
from tests.support.fleet import Fleet, running_fleet
from tests.support.relay import Relay
from tests.support.services import REPO, wait_for
from worker.api.app import create_app
from worker.store import open_store

OWNER = "acct-hooks"


class Receiver:
    """Records every POST; answers ``status`` (200 unless told otherwise)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.server_names: list[str | None] = []  # TLS: the SNI of each handshake
        self.status = 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    status = receiver.status
                    receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        if tls is not None:

            def sni(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
                self.server_names.append(name)

            tls.sni_callback = sni  # type: ignore[assignment]
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.url = f"https://localhost:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, secret: str, status: int = 200) -> list[dict[str, Any]]:
        """Every delivery answered ``status``, verified with its signature (fails if forged)."""
        hook = Webhook(secret)
        with self.lock:
            got = list(self.got)
        out = []
        for headers, body in got:
            verified = hook.verify(body, headers)  # raises on a bad or missing signature
            assert verified["id"] == headers["webhook-id"]
            out.append(verified)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hooks(tmp_path: Path, relay: Relay) -> Iterator[Fleet]:
    env = {
        "MAILDISPATCH_SMTP_ALLOWED_NETWORKS": "127.0.0.0/8",  # the receiver is on loopback
        "MAILDISPATCH_WEBHOOK_RETRY_DELAYS": "0.3s,0.6s",
        "MAILDISPATCH_WEBHOOK_DISABLE_AFTER": "4s",
        "MAILDISPATCH_SCHEDULER_INTERVAL": "0.1s",
    }
    with running_fleet(tmp_path, relay_url=relay.url, env=env) as fleet:
        # the Procfile's events line as written, started twice on this host (one process each):
        # their node names differ, and they share the lanes
        events_line(fleet, 0)
        events_line(fleet, 1)
        yield fleet


def events_line(fleet: Fleet, n: int) -> None:
    """Start the Procfile's ``events`` line with one process; wait until it is ready."""
    lines = dict(
        line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines() if line
    )
    path = f"{Path(sys.executable).parent}:$PATH"
    command = f"MAILDISPATCH_EVENTS_PROCESSES=1 PATH={path} exec {lines['events']}"
    proc = fleet.start(["sh", "-c", command], f"events-{n}.log")
    wait_for(lambda: "ready" in proc.text(), 60, 0.1, "the events line ready")


def add(fleet: Fleet, url: str, owner: str = OWNER, *extra: str) -> tuple[int, str]:
    added = fleet.cli_json("webhooks", "add", "--owner", owner, "--url", url, *extra)
    return int(added["id"]), str(added["secret"])


def job(to: str, owner: str = OWNER) -> dict[str, Any]:
    return {
        "owner": owner,
        "identity": "Ann <ann@acme.example>",
        "to": [to],
        "subject": "Hooks",
        "text": "Hello",
        "metadata": {"order": 9},
    }


def by_job(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        out.setdefault(e["data"]["job_id"], []).append(e["type"])
    return out


def test_every_event_arrives_signed_in_order_per_job(hooks: Fleet, receiver: Receiver) -> None:
    endpoint, secret = add(hooks, receiver.url)
    d = hooks.dispatcher
    ok = d.send(job("ok@example.org"))
    refused = d.send(job("reject-x@example.org"))
    retried = d.send(job("defer2-y@example.org"))
    other = d.send(job("z@example.org", owner="acct-else"))
    hooks.wait_final([ok, refused, retried, other], 30)

    def arrived() -> bool:
        seen = by_job(receiver.events(secret))
        return len(seen.get(str(retried), [])) == 3 and str(ok) in seen and str(refused) in seen

    wait_for(arrived, 30, 0.1, "every event at the receiver")
    events = receiver.events(secret)
    seen = by_job(events)
    assert seen[str(ok)] == ["message.sent"]
    assert seen[str(refused)] == ["message.failed"]
    assert seen[str(retried)] == ["message.retrying", "message.retrying", "message.sent"]
    assert str(other) not in seen  # another owner's
    assert all(e["data"]["metadata"] == {"order": 9} for e in events)
    assert len({e["id"] for e in events}) == len(events)
    listed = hooks.cli_json("webhooks", "list", "--owner", OWNER)
    assert [(e["id"], e["state"]) for e in listed] == [(endpoint, "enabled")]
    assert "secret" not in json.dumps(listed)


def test_a_receiver_down_for_a_while_gets_everything_after(
    hooks: Fleet, receiver: Receiver
) -> None:
    _, secret = add(hooks, receiver.url, OWNER, "--events", "message.sent")
    receiver.status = 503
    ids = [hooks.dispatcher.send(job(f"r{i}@example.org")) for i in range(6)]
    hooks.wait_final(ids, 30)
    wait_for(lambda: len(receiver.got) >= 3, 20, 0.1, "deliveries refused")
    receiver.status = 200

    def delivered() -> set[str]:
        return {
            e["data"]["job_id"]
            for (h, _), e in zip(receiver.got, receiver.events(secret), strict=True)
            if e["type"] == "message.sent"
        }

    wait_for(lambda: delivered() >= {str(i) for i in ids}, 30, 0.1, "every event after the outage")
    events = receiver.events(secret)
    assert {e["type"] for e in events} == {"message.sent"}  # the filter
    # an event sent again (its 503) carries the same id: receivers deduplicate on it
    per_id: dict[str, set[str]] = {}
    for e in events:
        per_id.setdefault(e["id"], set()).add(e["data"]["job_id"])
    assert all(len(jobs) == 1 for jobs in per_id.values())
    assert len(per_id) == len(ids)


def test_failing_for_too_long_disables_then_a_replay_catches_up(
    hooks: Fleet, receiver: Receiver
) -> None:
    endpoint, secret = add(hooks, receiver.url)
    receiver.status = 500
    started = time.time()
    first = hooks.dispatcher.send(job("a@example.org"))
    hooks.wait_final([first], 30)

    def disabled() -> bool:
        (row,) = hooks.cli_json("webhooks", "list", "--owner", OWNER)
        return bool(row["state"] == "disabled")

    wait_for(disabled, 30, 0.2, "the endpoint disabled")
    (row,) = hooks.cli_json("webhooks", "list", "--owner", OWNER)
    assert row["disabled_reason"].startswith("failing since ") and "500" in row["disabled_reason"]
    later = hooks.dispatcher.send(job("b@example.org"))  # while disabled: not delivered
    hooks.wait_final([later], 30)
    time.sleep(1)
    tried = len(receiver.got)
    time.sleep(1)
    assert len(receiver.got) == tried

    receiver.status = 200
    assert hooks.cli("webhooks", "enable", str(endpoint)).returncode == 0
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started - 1))
    replayed = hooks.cli_json("webhooks", "replay", str(endpoint), "--since", since)
    assert replayed["replayed"] == 2

    def caught_up() -> bool:
        ok = [e for (h, _), e in zip(receiver.got, receiver.events(secret), strict=True)]
        return {str(first), str(later)} <= {e["data"]["job_id"] for e in ok[tried:]}

    wait_for(caught_up, 30, 0.1, "the replay delivered")


def test_endpoints_over_http(hooks: Fleet, receiver: Receiver) -> None:
    store = open_store(hooks.database_url)
    admin = new_key(store, "admin")
    mine = new_key(store, "svc-hooks", "send,read", owner=OWNER)
    with serve(create_app(hooks.settings)) as url, httpx.Client(base_url=url) as c:
        made = c.post(
            "/v1/webhooks", json={"owner": OWNER, "url": receiver.url}, headers=bearer(mine)
        )
        assert made.status_code == 201 and made.json()["secret"].startswith("whsec_")
        theirs = {"owner": "acct-else", "url": receiver.url}
        assert c.post("/v1/webhooks", json=theirs, headers=bearer(mine)).status_code == 403
        every = {"url": receiver.url}
        assert c.post("/v1/webhooks", json=every, headers=bearer(mine)).status_code == 403
        star = {"owner": "*", "url": receiver.url}  # every owner's too, as in the CLI
        assert c.post("/v1/webhooks", json=star, headers=bearer(mine)).status_code == 403
        operator = c.post("/v1/webhooks", json=star, headers=bearer(admin)).json()["id"]
        (row,) = [
            e for e in c.get("/v1/webhooks", headers=bearer(admin)).json() if e["id"] == operator
        ]
        assert row["owner"] is None
        bad = c.post("/v1/webhooks", json={"owner": OWNER, "url": "ftp://x"}, headers=bearer(mine))
        assert bad.status_code == 422
        kinds = {"owner": OWNER, "url": receiver.url, "events": ["message.nope"]}
        assert c.post("/v1/webhooks", json=kinds, headers=bearer(mine)).status_code == 422
        inner = {"owner": OWNER, "url": "http://10.0.0.1/x"}  # a private network: refused
        assert c.post("/v1/webhooks", json=inner, headers=bearer(mine)).status_code == 422
        other = c.post("/v1/webhooks", json=theirs, headers=bearer(admin)).json()["id"]
        listed = c.get("/v1/webhooks", headers=bearer(mine)).json()
        assert [e["id"] for e in listed] == [made.json()["id"]]
        assert c.delete(f"/v1/webhooks/{other}", headers=bearer(mine)).status_code == 404
        assert (
            c.delete(f"/v1/webhooks/{made.json()['id']}", headers=bearer(mine)).status_code == 204
        )
        assert c.get("/v1/webhooks", headers=bearer(mine)).json() == []


def test_a_post_goes_to_the_address_it_checked_and_names_the_host(receiver: Receiver) -> None:
    """The policy judges the host's addresses before anything is sent, and the POST made to
    the checked address (no second lookup for DNS rebinding to answer differently) still names
    the host, so virtual hosts and signatures work. (A resolver that changes its answer between
    two lookups is not simulated here: the system's resolver is the one used.)"""
    import socket

    from worker.channels.netguard import NetworkPolicy
    from worker.webhooks.deliver import Pools, WebhookFailed, post, resolve
    from worker.webhooks.endpoints import ENABLED, Endpoint

    found = {info[4][0] for info in socket.getaddrinfo("localhost", None)}
    if found != {"127.0.0.1"}:
        pytest.skip(f"localhost resolves to {sorted(found)} here, not 127.0.0.1 alone")
    port = receiver.server.server_address[1]
    url = f"http://localhost:{port}/hooks"
    endpoint = Endpoint(1, OWNER, url, None, ENABLED, 0.0)
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"id": "evt_1", "type": "message.sent"}'
    loopback = NetworkPolicy.of(("127.0.0.0/8",), ())
    pools = Pools()
    with pytest.raises(WebhookFailed, match="may not reach"):
        resolve(pools, endpoint, secret, loopback)  # loopback blocked: nothing sent
    assert receiver.got == []
    target = resolve(pools, endpoint, secret, NetworkPolicy.of((), ()))
    post(target, body, "evt_1")
    receiver.status = 500
    with pytest.raises(WebhookFailed, match="answered 500"):
        post(target, body, "evt_1")
    pools.close()
    receiver.got = receiver.got[:1]
    ((headers, got),) = receiver.got
    assert got == body and headers["host"] == f"localhost:{port}"
    assert Webhook(secret).verify(got, headers)["id"] == "evt_1"


def test_https_endpoints_are_checked_against_the_configured_ca(
    tmp_path: Path, relay: Relay, pki: Pki
) -> None:
    """An HTTPS receiver whose certificate an internal CA issued: delivered once that CA is
    ``MAILDISPATCH_WEBHOOK_CA_FILE``, with SNI and the certificate naming the URL's host (the
    connection goes to the address checked); refused against certifi's bundle."""
    import socket

    from worker.channels.netguard import NetworkPolicy
    from worker.webhooks.deliver import Pools, WebhookFailed, post, resolve
    from worker.webhooks.endpoints import ENABLED, Endpoint

    if {info[4][0] for info in socket.getaddrinfo("localhost", None)} != {"127.0.0.1"}:
        pytest.skip("localhost does not resolve to 127.0.0.1 alone here")
    receiver = Receiver(tls=pki.server_context())
    try:
        endpoint = Endpoint(1, OWNER, receiver.url, None, ENABLED, 0.0)
        secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        body = b'{"id": "evt_tls", "type": "message.sent"}'
        anywhere = NetworkPolicy.of((), ())
        public = Pools()  # certifi's CAs: the internal CA is not among them
        with pytest.raises(WebhookFailed, match=r"SSL|certificate"):
            post(resolve(public, endpoint, secret, anywhere), body, "evt_tls")
        public.close()
        assert receiver.got == []

        env = {
            "MAILDISPATCH_SMTP_ALLOWED_NETWORKS": "127.0.0.0/8",
            "MAILDISPATCH_WEBHOOK_CA_FILE": str(pki.ca_file),
            "MAILDISPATCH_SCHEDULER_INTERVAL": "0.1s",
        }
        with running_fleet(tmp_path, relay_url=relay.url, env=env) as fleet:
            fleet.worker("mail.events", concurrency=2, pool="threads")
            _, hook_secret = add(fleet, receiver.url, OWNER, "--events", "message.sent")
            job_id = fleet.dispatcher.send(job("tls@example.org"))

            def arrived() -> bool:
                return len(receiver.events(hook_secret)) >= 1

            wait_for(arrived, 30, 0.1, "the event over HTTPS")
        (event,) = receiver.events(hook_secret)
        assert event["data"]["job_id"] == str(job_id)
        assert receiver.server_names and set(receiver.server_names) == {"localhost"}
        assert receiver.got[0][0]["host"] == receiver.url.split("/")[2]
    finally:
        receiver.close()


def test_a_kept_alive_connection_the_endpoint_closed_is_replaced_once() -> None:
    """Endpoints close idle keep-alive connections whenever they like: the next POST on such a
    connection is sent again once on a new one (the event delivered, not failed); an endpoint
    that drops every connection before answering is a failure, not a loop."""
    import socket

    from worker.channels.netguard import NetworkPolicy
    from worker.webhooks.deliver import Pools, WebhookFailed, post, resolve
    from worker.webhooks.endpoints import ENABLED, Endpoint

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    requests: list[bytes] = []
    answer = True  # else: close before answering

    def serve_once_per_connection() -> None:
        # HTTP/1.1 without "Connection: close", then the connection closed all the same
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(body) < length:
                    body += conn.recv(65536)
                requests.append(body)
                if answer:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    time.sleep(0.05)  # closed after the client read the answer

    thread = threading.Thread(target=serve_once_per_connection, daemon=True)
    thread.start()
    pools = Pools()
    try:
        endpoint = Endpoint(1, OWNER, f"http://127.0.0.1:{port}/hooks", None, ENABLED, 0.0)
        secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        target = resolve(pools, endpoint, secret, NetworkPolicy.of((), ()))
        bodies = [b'{"id": "evt_%d", "type": "message.sent"}' % n for n in range(3)]
        for n, body in enumerate(bodies):
            post(target, body, f"evt_{n}")
        assert requests == bodies
        answer = False
        with pytest.raises(WebhookFailed, match=r"RemoteDisconnected|Connection"):
            post(target, b'{"id": "evt_x", "type": "message.sent"}', "evt_x")
    finally:
        pools.close()
        listener.close()
