"""Custom SMTP with an OAuth grant (``AUTH XOAUTH2``), as Microsoft 365 requires once Basic
authentication for SMTP ends: a real worker on ``mail.smtp``, an aiosmtpd server that takes
XOAUTH2 only (STARTTLS, a CA only the account trusts, the session closed after each message),
and a local fake of Microsoft's v2.0 token endpoint that rotates refresh tokens."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.auth_smtpd import Pki, XOAuth2Handler
from tests.support.dumps import database_bytes, redis_dump
from tests.support.fake_google import FakeGoogle
from tests.support.fake_microsoft import SMTP_SCOPE, FakeMicrosoft
from tests.support.fleet import USER_CHANNELS, Fleet, running_fleet
from tests.support.relay import Relay
from worker.accounts.connected import account_row
from worker.accounts.vault import Vault
from worker.store import Store

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_SECRET = "client~secret-value"
MAILBOX = "ann@contoso.example"


@pytest.fixture(scope="module")
def ofleet(
    tmp_path_factory: pytest.TempPathFactory, microsoft: FakeMicrosoft, google: FakeGoogle
) -> Iterator[Fleet]:
    env = {
        **USER_CHANNELS,
        "MAILDISPATCH_MICROSOFT_TOKEN_URI": microsoft.token_uri,
        "MAILDISPATCH_GOOGLE_TOKEN_URI": google.token_uri,
    }
    with running_fleet(tmp_path_factory.mktemp("oauth-fleet"), "mail.smtp", env=env) as fleet:
        yield fleet


@pytest.fixture
def owner(ofleet: Fleet, exchange: Relay, microsoft: FakeMicrosoft) -> Iterator[str]:
    microsoft.reset()
    _handler(exchange).reset()
    name = f"tenant-{uuid.uuid4().hex[:8]}"
    yield name
    ofleet.forget(name)


def _handler(server: Relay) -> XOAuth2Handler:
    assert isinstance(server.handler, XOAuth2Handler)
    return server.handler


def _connect(fleet: Fleet, owner: str, server: Relay, pki: Pki, refresh_token: str) -> Any:
    """``accounts smtp set --auth xoauth2`` as an operator would, secrets on stdin."""
    return fleet.cli_json(
        "accounts", "smtp", "set", "--owner", owner, "--auth", "xoauth2",
        "--provider", "microsoft", "--host", "127.0.0.1", "--port", str(server.port),
        "--security", "starttls", "--username", MAILBOX, "--refresh-token-stdin",
        "--client-id", CLIENT_ID, "--client-secret-stdin", "--ca-file", str(pki.ca_file),
        stdin=f"{refresh_token}\n{CLIENT_SECRET}\n",
    )  # fmt: skip


def _job(owner: str, **overrides: Any) -> dict[str, Any]:
    return {
        "owner": owner,
        "channel": "smtp",
        "identity": f"Ann <{MAILBOX}>",
        "to": ["bob@example.org"],
        "subject": "Through Exchange Online",
        "text": "Hi Bob\n",
    } | overrides


def _logins(server: Relay) -> list[tuple[str, str, bool]]:
    return [(x.mechanism, x.username, x.success) for x in _handler(server).logins]


def test_delivered_with_xoauth2_and_the_grant_kept_encrypted(
    ofleet: Fleet, exchange: Relay, pki: Pki, microsoft: FakeMicrosoft, owner: str
) -> None:
    first_refresh = microsoft.grant(MAILBOX, CLIENT_ID, CLIENT_SECRET)
    shown = _connect(ofleet, owner, exchange, pki, first_refresh)
    assert (shown["state"], shown["auth"], shown["provider"]) == (
        "connected",
        "xoauth2",
        "microsoft",
    )
    assert shown["oauth_client"] == CLIENT_ID and "refresh_token" not in str(shown)

    job_id = ofleet.dispatcher.send(_job(owner))
    assert ofleet.wait_final([job_id]) == {str(job_id): "sent"}
    (got,) = _handler(exchange).messages
    assert got.mail_from == MAILBOX and got.rcpt_tos == ["bob@example.org"]
    assert _handler(exchange).tls_data == [True]
    assert _logins(exchange) == [("XOAUTH2", MAILBOX, True)]
    (asked,) = microsoft.requests
    assert asked.outcome == "ok" and asked.client_id == CLIENT_ID
    assert set(asked.scope.split()) == {SMTP_SCOPE, "offline_access"}

    # Microsoft replaced the refresh token (the fake refuses the used one at once): the new
    # one is what the store now holds, encrypted
    rotated = microsoft.current_refresh_token(MAILBOX)
    assert rotated != first_refresh
    store = Store(ofleet.database_url)
    try:
        with store.session() as session:
            row = account_row(session, owner, "smtp")
            assert row is not None
            secrets = Vault.from_settings(ofleet.settings).open(owner, "smtp", row.secret)
    finally:
        store.dispose()
    assert secrets["refresh_token"] == rotated


def test_an_expired_access_token_is_refreshed_before_the_next_login(
    ofleet: Fleet, exchange: Relay, pki: Pki, microsoft: FakeMicrosoft, owner: str
) -> None:
    _connect(ofleet, owner, exchange, pki, microsoft.grant(MAILBOX, CLIENT_ID, CLIENT_SECRET))
    microsoft.expires_in = 2  # the server refuses each token 2 s after it was issued
    first = ofleet.dispatcher.send(_job(owner))
    assert ofleet.wait_final([first]) == {str(first): "sent"}
    time.sleep(3)
    second = ofleet.dispatcher.send(_job(owner))
    assert ofleet.wait_final([second]) == {str(second): "sent"}
    assert microsoft.outcomes() == ["ok", "ok"]
    # the worker knew the token had expired: no refused login, each attempt a first try
    assert _logins(exchange) == [("XOAUTH2", MAILBOX, True)] * 2
    assert ofleet.status(second)["attempts"] == "1"


def test_a_refused_access_token_is_replaced_within_the_attempt(
    ofleet: Fleet, exchange: Relay, pki: Pki, microsoft: FakeMicrosoft, owner: str
) -> None:
    _connect(ofleet, owner, exchange, pki, microsoft.grant(MAILBOX, CLIENT_ID, CLIENT_SECRET))
    first = ofleet.dispatcher.send(_job(owner))
    assert ofleet.wait_final([first]) == {str(first): "sent"}
    microsoft.expire_access_tokens()  # revoked early, e.g. a password change in the tenant
    second = ofleet.dispatcher.send(_job(owner))
    assert ofleet.wait_final([second]) == {str(second): "sent"}
    assert _logins(exchange) == [
        ("XOAUTH2", MAILBOX, True),
        ("XOAUTH2", MAILBOX, False),
        ("XOAUTH2", MAILBOX, True),
    ]
    assert microsoft.outcomes() == ["ok", "ok"]
    assert ofleet.status(second)["attempts"] == "1"
    assert ofleet.account(owner, "smtp")["state"] == "connected"


def test_a_revoked_grant_needs_reconnect_and_fails_once(
    ofleet: Fleet, exchange: Relay, pki: Pki, microsoft: FakeMicrosoft, owner: str
) -> None:
    _connect(ofleet, owner, exchange, pki, microsoft.grant(MAILBOX, CLIENT_ID, CLIENT_SECRET))
    microsoft.revoke(MAILBOX)
    job_id = ofleet.dispatcher.send(_job(owner))
    assert ofleet.wait_final([job_id]) == {str(job_id): "failed"}
    assert ofleet.status(job_id)["attempts"] == "1"  # never retried
    (failed,) = ofleet.status(job_id)["failed_sends"]
    assert failed["kind"] == "auth" and "invalid_grant" in failed["diagnostic"]
    assert "reconnect" in failed["diagnostic"]
    account = ofleet.account(owner, "smtp")
    assert account["state"] == "needs_reconnect" and "AADSTS50173" in account["last_error"]
    assert microsoft.outcomes() == ["invalid_grant"]
    assert _handler(exchange).logins == []  # no login was tried without a token

    # the next job fails at once: no other refresh, no login
    second = ofleet.dispatcher.send(_job(owner))
    assert ofleet.wait_final([second]) == {str(second): "failed"}
    assert microsoft.outcomes() == ["invalid_grant"]
    assert "needs_reconnect" in ofleet.status(second)["failed_sends"][0]["diagnostic"]

    # connecting again makes it usable
    _connect(ofleet, owner, exchange, pki, microsoft.grant(MAILBOX, CLIENT_ID, CLIENT_SECRET))
    time.sleep(2.2)  # the worker keeps an account's record for 2 s
    third = ofleet.dispatcher.send(_job(owner))
    assert ofleet.wait_final([third]) == {str(third): "sent"}


def test_no_token_or_client_secret_in_the_clear(
    ofleet: Fleet, exchange: Relay, pki: Pki, microsoft: FakeMicrosoft, owner: str
) -> None:
    refresh = microsoft.grant(MAILBOX, CLIENT_ID, CLIENT_SECRET)
    _connect(ofleet, owner, exchange, pki, refresh)
    job_id = ofleet.dispatcher.send(_job(owner))
    assert ofleet.wait_final([job_id]) == {str(job_id): "sent"}
    access = list(microsoft.tokens)
    assert access, "the worker fetched an access token"
    listing = ofleet.cli("accounts", "list", "--owner", owner, "--json")
    haystacks = {
        "database": database_bytes(ofleet.database_file),
        "redis": redis_dump(ofleet.redis),
        "logs": ofleet.logs().encode(),
        "cli": (listing.stdout + listing.stderr).encode(),
    }
    secrets = [refresh, microsoft.current_refresh_token(MAILBOX), CLIENT_SECRET, *access]
    for secret in secrets:
        for needle in (secret.encode(), base64.b64encode(secret.encode())):
            for where, data in haystacks.items():
                assert needle not in data, f"a secret is in the {where}"
    assert owner.encode() in haystacks["database"]  # the search itself works


def test_a_server_without_xoauth2_is_a_configuration_failure(
    ofleet: Fleet, pki: Pki, microsoft: FakeMicrosoft, owner: str
) -> None:
    from tests.support.auth_smtpd import auth_server

    plain = auth_server(pki, {"ann": "pw"}).start()  # PLAIN and LOGIN only
    try:
        _connect(ofleet, owner, plain, pki, microsoft.grant(MAILBOX, CLIENT_ID, CLIENT_SECRET))
        job_id = ofleet.dispatcher.send(_job(owner))
        assert ofleet.wait_final([job_id]) == {str(job_id): "failed"}
        (failed,) = ofleet.status(job_id)["failed_sends"]
        assert failed["kind"] == "config" and "XOAUTH2" in failed["diagnostic"]
        assert ofleet.account(owner, "smtp")["state"] == "connected"  # the grant is fine
    finally:
        plain.stop()


def test_google_smtp_with_xoauth2(ofleet: Fleet, pki: Pki, google: FakeGoogle, owner: str) -> None:
    from tests.support.auth_smtpd import xoauth2_server

    gmail_smtp = xoauth2_server(pki, google.holder).start()  # smtp.gmail.com's part
    try:
        refresh = google.grant("ann@gmail.com", CLIENT_ID, CLIENT_SECRET)
        shown = ofleet.cli_json(
            "accounts", "smtp", "set", "--owner", owner, "--auth", "xoauth2",
            "--provider", "google", "--host", "127.0.0.1", "--port", str(gmail_smtp.port),
            "--security", "starttls", "--username", "ann@gmail.com", "--refresh-token-stdin",
            "--client-id", CLIENT_ID, "--client-secret-stdin", "--ca-file", str(pki.ca_file),
            stdin=f"{refresh}\n{CLIENT_SECRET}\n",
        )  # fmt: skip
        assert (shown["auth"], shown["provider"]) == ("xoauth2", "google")
        job_id = ofleet.dispatcher.send(_job(owner, identity="Ann <ann@gmail.com>"))
        assert ofleet.wait_final([job_id]) == {str(job_id): "sent"}
        assert _logins(gmail_smtp) == [("XOAUTH2", "ann@gmail.com", True)]
        google.revoke(refresh)
        ofleet.forget(owner)  # a fresh account record, then the revoked grant
        ofleet.cli_json(
            "accounts", "smtp", "set", "--owner", owner, "--auth", "xoauth2",
            "--provider", "google", "--host", "127.0.0.1", "--port", str(gmail_smtp.port),
            "--username", "ann@gmail.com", "--refresh-token-stdin", "--client-id", CLIENT_ID,
            "--client-secret-stdin", "--ca-file", str(pki.ca_file),
            stdin=f"{refresh}\n{CLIENT_SECRET}\n",
        )  # fmt: skip
        time.sleep(2.2)  # the worker keeps an account's record for 2 s
        failed = ofleet.dispatcher.send(_job(owner, identity="Ann <ann@gmail.com>"))
        assert ofleet.wait_final([failed]) == {str(failed): "failed"}
        assert ofleet.account(owner, "smtp")["state"] == "needs_reconnect"
    finally:
        gmail_smtp.stop()
