"""The custom SMTP channel: a real worker on ``mail.smtp`` and a user's server (aiosmtpd) that
requires STARTTLS and AUTH, with a certificate from a CA only the account trusts."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.auth_smtpd import AuthHandler, Pki, auth_server
from tests.support.banner_server import BannerServer
from tests.support.dumps import database_bytes, redis_dump
from tests.support.fleet import USER_CHANNELS, Fleet, running_fleet
from tests.support.relay import Relay

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def servers(pki: Pki) -> Iterator[dict[str, Relay]]:
    started = {
        "plain": auth_server(pki, {"ann": PASSWORD}).start(),
        "login-only": auth_server(pki, {"ann": PASSWORD}, mechanisms=("LOGIN",)).start(),
    }
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture
def server(servers: dict[str, Relay]) -> Relay:
    for s in servers.values():
        s.handler.reset()
    return servers["plain"]


@pytest.fixture(scope="module")
def sfleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("smtp-fleet")
    with running_fleet(tmp, "mail.smtp", env=USER_CHANNELS) as fleet:
        yield fleet


@pytest.fixture
def owner(sfleet: Fleet, server: Relay) -> Iterator[str]:
    name = f"user-{uuid.uuid4().hex[:8]}"
    yield name
    sfleet.forget(name)


def _handler(server: Relay) -> AuthHandler:
    assert isinstance(server.handler, AuthHandler)
    return server.handler


def _set(
    fleet: Fleet,
    owner: str,
    server: Relay,
    password: str = PASSWORD,
    ca_file: Path | None = None,
    trust: bool = True,
) -> dict[str, Any]:
    """``accounts smtp set`` through the CLI, the password on stdin."""
    args = [
        "accounts", "smtp", "set", "--owner", owner, "--host", "127.0.0.1",
        "--port", str(server.port), "--security", "starttls", "--username", "ann",
        "--password-stdin",
    ]  # fmt: skip
    if trust and ca_file is not None:
        args += ["--ca-file", str(ca_file)]
    shown = fleet.cli_json(*args, stdin=password + "\n")
    assert shown["state"] == "connected" and shown["custom_ca"] is (trust and ca_file is not None)
    return dict(shown)


def _job(owner: str, **overrides: Any) -> dict[str, Any]:
    return {
        "owner": owner,
        "channel": "smtp",
        "identity": "Ann Example <ann@acme.example>",
        "to": ["bob@example.org"],
        "subject": "Through my own server",
        "text": "Hi Bob\n",
    } | overrides


def test_delivered_over_starttls_with_auth(
    sfleet: Fleet, server: Relay, pki: Pki, owner: str
) -> None:
    _set(sfleet, owner, server, ca_file=pki.ca_file)
    job_id = sfleet.dispatcher.send(_job(owner, bcc=["hidden@example.net"]))
    assert sfleet.wait_final([job_id]) == {str(job_id): "sent"}
    handler = _handler(server)
    (got,) = handler.messages
    assert got.mail_from == "ann@acme.example"  # the identity: bounces go to the user
    assert sorted(got.rcpt_tos) == ["bob@example.org", "hidden@example.net"]
    msg = got.message
    assert str(msg["From"]) == "Ann Example <ann@acme.example>"
    assert msg["Sender"] is None and msg["Bcc"] is None
    assert msg["Message-ID"] == f"<{job_id}@acme.example>"
    assert handler.tls_data == [True]
    assert [(x.mechanism, x.username, x.success) for x in handler.logins] == [
        ("PLAIN", "ann", True)
    ]
    status = sfleet.status(job_id)
    assert status["channel"] == "smtp" and status["attempts"] == "1"
    assert status["from_address"] == "ann@acme.example" and status["from_replaced"] == "no"
    assert status["reply"].startswith("250")


def test_login_only_server_exchange_style(
    sfleet: Fleet, servers: dict[str, Relay], pki: Pki, owner: str
) -> None:
    login_only = servers["login-only"]
    _set(sfleet, owner, login_only, ca_file=pki.ca_file)
    job_id = sfleet.dispatcher.send(_job(owner))
    assert sfleet.wait_final([job_id]) == {str(job_id): "sent"}
    handler = _handler(login_only)
    assert [(x.mechanism, x.success) for x in handler.logins] == [("LOGIN", True)]
    assert len(handler.messages) == 1


def test_wrong_password_flags_the_account_and_fails_once(
    sfleet: Fleet, server: Relay, pki: Pki, owner: str
) -> None:
    _set(sfleet, owner, server, password="not the password", ca_file=pki.ca_file)
    job_id = sfleet.dispatcher.send(_job(owner))
    assert sfleet.wait_final([job_id]) == {str(job_id): "failed"}
    assert (sfleet.dispatcher.status(job_id) or {})["attempts"] == "1"  # never retried
    (failed,) = sfleet.status(job_id)["failed_sends"]
    assert (failed["kind"], failed["reply_code"]) == ("auth", 535)
    account = sfleet.account(owner, "smtp")
    assert account["state"] == "auth_failed" and "535" in account["last_error"]
    handler = _handler(server)
    tried = len(handler.logins)
    assert 1 <= tried <= 2 and not any(x.success for x in handler.logins)

    # the next job fails without another login (no lock-out of the user's mailbox)
    second = sfleet.dispatcher.send(_job(owner))
    assert sfleet.wait_final([second]) == {str(second): "failed"}
    assert len(handler.logins) == tried
    assert "auth_failed" in sfleet.status(second)["failed_sends"][0]["diagnostic"]

    # new credentials make it usable again
    _set(sfleet, owner, server, ca_file=pki.ca_file)
    time.sleep(2.2)  # the worker keeps an account's record for 2 s
    third = sfleet.dispatcher.send(_job(owner))
    assert sfleet.wait_final([third]) == {str(third): "sent"}
    assert sfleet.account(owner, "smtp")["state"] == "connected"


def test_untrusted_certificate_is_never_sent_to(sfleet: Fleet, server: Relay, owner: str) -> None:
    _set(sfleet, owner, server, trust=False)  # the test CA is not among the system's
    job_id = sfleet.dispatcher.send(_job(owner))
    assert sfleet.wait_final([job_id]) == {str(job_id): "failed"}
    (failed,) = sfleet.status(job_id)["failed_sends"]
    assert failed["kind"] == "config" and "certificate" in failed["diagnostic"]
    handler = _handler(server)
    assert handler.logins == [] and handler.messages == []  # the password never left


def test_reply_codes_follow_the_msc_policy(
    sfleet: Fleet, server: Relay, pki: Pki, owner: str
) -> None:
    _set(sfleet, owner, server, ca_file=pki.ca_file)
    deferred = sfleet.dispatcher.send(_job(owner, to=["defer1-slow@example.org"]))
    rejected = sfleet.dispatcher.send(_job(owner, to=["reject-ghost@example.org"]))
    assert sfleet.wait_final([deferred, rejected]) == {
        str(deferred): "sent",
        str(rejected): "failed",
    }
    assert (sfleet.dispatcher.status(deferred) or {})["attempts"] == "2"
    (failed,) = sfleet.status(rejected)["failed_sends"]
    assert (failed["kind"], failed["reply_code"], failed["enhanced_status"]) == (
        "rejected",
        550,
        "5.1.1",
    )
    assert sfleet.account(owner, "smtp")["state"] == "connected"


def test_connections_are_pooled_per_server_and_credentials(
    sfleet: Fleet, server: Relay, pki: Pki, owner: str
) -> None:
    _set(sfleet, owner, server, ca_file=pki.ca_file)
    for _ in range(2):
        ids = sfleet.dispatcher.send_many([_job(owner, to=[f"r{i}@example.org"]) for i in range(8)])
        assert set(sfleet.wait_final(ids).values()) == {"sent"}
    handler = _handler(server)
    assert len(handler.messages) == 16
    assert 1 <= len(handler.logins) <= 3  # at most 3 connections, each logged in once


def test_job_without_channel_follows_the_preference(
    sfleet: Fleet, server: Relay, pki: Pki, owner: str
) -> None:
    _set(sfleet, owner, server, ca_file=pki.ca_file)
    out = sfleet.cli("accounts", "prefer", "--owner", owner, "--channel", "smtp")
    assert out.returncode == 0, out.stderr
    job = _job(owner)
    del job["channel"]
    job_id = sfleet.dispatcher.send(job)
    assert sfleet.wait_final([job_id]) == {str(job_id): "sent"}
    assert sfleet.status(job_id)["channel"] == "smtp"
    assert len(_handler(server).messages) == 1
    [entry] = sfleet.cli_json("accounts", "list", "--owner", owner)
    assert entry["preferred_channel"] == "smtp"


def test_no_password_in_the_clear_in_database_redis_or_logs(
    sfleet: Fleet, server: Relay, pki: Pki, owner: str
) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    # first refused (the server expects another password), then accepted
    _set(sfleet, owner, server, password=secret, ca_file=pki.ca_file)
    refused = sfleet.dispatcher.send(_job(owner))
    assert sfleet.wait_final([refused]) == {str(refused): "failed"}
    _handler(server).users["ann"] = secret
    try:
        _set(sfleet, owner, server, password=secret, ca_file=pki.ca_file)
        time.sleep(2.2)  # the worker keeps an account's record for 2 s
        ok = sfleet.dispatcher.send(_job(owner))
        assert sfleet.wait_final([ok]) == {str(ok): "sent"}
    finally:
        _handler(server).users["ann"] = PASSWORD
    listing = sfleet.cli("accounts", "list", "--owner", owner, "--json")
    status = sfleet.cli("status", str(refused), "--json")
    haystacks = {
        "database": database_bytes(sfleet.database_file),
        "redis": redis_dump(sfleet.redis),
        "logs": sfleet.logs().encode(),
        "cli": (listing.stdout + listing.stderr + status.stdout).encode(),
    }
    plain_auth = base64.b64encode(f"\0ann\0{secret}".encode())
    for needle in (secret.encode(), base64.b64encode(secret.encode()), plain_auth):
        for where, data in haystacks.items():
            assert needle not in data, f"the password is in the {where}"
    assert b"auth_failed" in haystacks["database"]  # the search itself works


def test_plain_text_setting_is_refused(sfleet: Fleet, server: Relay, owner: str) -> None:
    out = sfleet.cli(
        "accounts", "smtp", "set", "--owner", owner, "--host", "127.0.0.1",
        "--port", str(server.port), "--security", "none", "--username", "ann",
        "--password-stdin", stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert out.returncode == 2, out.stderr  # refused input
    assert "unencrypted" in out.stderr and "MAILDISPATCH_SMTP_ALLOW_PLAINTEXT_AUTH" in out.stderr
    assert sfleet.cli_json("accounts", "list", "--owner", owner) == []
    assert _handler(server).logins == []


def _set_peer(fleet: Fleet, owner: str, port: int) -> None:
    args = [
        "accounts", "smtp", "set", "--owner", owner, "--host", "127.0.0.1",
        "--port", str(port), "--security", "starttls", "--username", "ann", "--password-stdin",
    ]  # fmt: skip
    assert fleet.cli_json(*args, stdin=PASSWORD + "\n")["state"] == "connected"


@pytest.mark.parametrize(
    "banner",
    [
        b"SSH-2.0-OpenSSH_9.6 internal-host-7\r\n",
        b"HTTP/1.1 400 Bad Request\r\nServer: internal-admin/1.0\r\n\r\n",
        b"\x4a\x00\x00\x00\x0a8.0.36-internal\x00\x01\x02\n",  # a database's binary greeting
        b"250 internal-host-7 ready\r\n",  # a reply code, but not a greeting
    ],
    ids=["ssh", "http", "binary", "not-a-greeting"],
)
def test_a_peer_that_is_not_smtp_gets_a_generic_error(
    sfleet: Fleet, owner: str, banner: bytes
) -> None:
    peer = BannerServer(banner).start()
    try:
        _set_peer(sfleet, owner, peer.port)
        job_id = sfleet.dispatcher.send(_job(owner))
        assert sfleet.wait_final([job_id]) == {str(job_id): "failed"}
    finally:
        peer.stop()
    assert peer.connections >= 1
    status = sfleet.cli("status", str(job_id), "--json")
    (failed,) = json.loads(status.stdout)["failed_sends"]
    assert failed["kind"] == "config"
    assert (
        failed["diagnostic"] == "the server did not answer as an SMTP server (no valid SMTP reply)"
    )
    for word in ("internal", "SSH", "HTTP", "8.0.36"):
        assert word not in status.stdout


def test_an_smtp_reply_is_quoted_as_bounded_printable_text(sfleet: Fleet, owner: str) -> None:
    noise = "\x1b[2J\x07 tail\u202e" + "x" * 3000
    peer = BannerServer(f"554 5.7.1 go away{noise}\r\n".encode()).start()
    try:
        _set_peer(sfleet, owner, peer.port)
        job_id = sfleet.dispatcher.send(_job(owner))
        assert sfleet.wait_final([job_id]) == {str(job_id): "failed"}
    finally:
        peer.stop()
    (failed,) = sfleet.status(job_id)["failed_sends"]
    assert failed["reply_code"] == 554 and failed["enhanced_status"] == "5.7.1"
    text = failed["diagnostic"]
    assert text.startswith("5.7.1 go away") and text.endswith("...") and len(text) <= 300
    assert text.isascii() and text.isprintable()


def test_implicit_tls_with_login(pki: Pki) -> None:
    """``--security tls`` (port 465 style), in this process: the channel alone."""
    import asyncio

    from config.settings import Settings
    from producers.job import parse_job
    from tests.support.services import free_port
    from worker.accounts.connected import SmtpAccount
    from worker.channels.base import Envelope
    from worker.channels.smtp import SmtpChannel
    from worker.message.build import build_message

    handler = AuthHandler({"ann": PASSWORD})
    tls = Relay(
        free_port(),
        handler,
        ssl_context=pki.server_context(),
        authenticator=handler.authenticate,
        auth_require_tls=False,  # aiosmtpd counts only STARTTLS as TLS; this socket is TLS
        auth_exclude_mechanism=["PLAIN"],
    ).start()
    account = SmtpAccount(
        "o", "127.0.0.1", tls.port, "tls", "ann", PASSWORD, pki.ca_file.read_text()
    )
    job = parse_job(_job("o"))

    async def run() -> None:
        channel = SmtpChannel(
            Settings(secret_key="k" * 32, smtp_timeout=10, smtp_allowed_networks="127.0.0.1")
        )
        options = channel.message_options(job, account)
        message = build_message(job, domain=options.domain)
        try:
            receipt = await channel.deliver(
                message, Envelope(options.mail_from, tuple(job.recipients)), account
            )
            assert receipt.reply_code == 250
        finally:
            await channel.close()

    try:
        asyncio.run(asyncio.wait_for(run(), 30))
    finally:
        tls.stop()
    assert [(x.mechanism, x.success) for x in handler.logins] == [("LOGIN", True)]
    assert handler.tls_data == [True] and len(handler.messages) == 1


def test_an_unsubscribe_follows_the_person_a_hard_bounce_stays_with_msc(
    sfleet: Fleet, server: Relay, pki: Pki, owner: str
) -> None:
    from worker.store import Store, repo

    _set(sfleet, owner, server, ca_file=pki.ca_file)
    store = Store(sfleet.database_url)
    try:
        with store.session() as s:
            repo.suppress(s, owner, ["left@example.org"], "unsubscribe", str(uuid.uuid4()))
            repo.suppress(s, owner, ["angry@example.org"], "complaint:abuse", str(uuid.uuid4()))
            repo.suppress(s, owner, ["asked@example.org"], "manual")  # the owner added it
            # a hard bounce seen on MSC: the address may work through the owner's own server
            repo.suppress(s, owner, ["moved@example.org"], "userunknown", str(uuid.uuid4()))
    finally:
        store.dispose()
    to = ["left@example.org", "angry@example.org", "asked@example.org", "moved@example.org"]
    job_id = sfleet.dispatcher.send(_job(owner, to=[*to, "bob@example.org"]))
    assert sfleet.wait_final([job_id]) == {str(job_id): "sent"}
    (got,) = _handler(server).messages
    assert sorted(got.rcpt_tos) == ["bob@example.org", "moved@example.org"]
    failures = sfleet.status(job_id)["failed_sends"]
    assert sorted((f["recipient"], f["kind"]) for f in failures) == [
        ("angry@example.org", "suppressed"),
        ("asked@example.org", "suppressed"),
        ("left@example.org", "suppressed"),
    ]
