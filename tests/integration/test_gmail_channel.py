"""The Gmail channel against a local fake of Google's token endpoint and Gmail API.

The first tests run the channel in this process (every answer Google can give, through real
HTTP); the rest run a real Celery worker on ``mail.gmail`` and drive it through the CLI and the
Dispatcher, as a user would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from config.settings import Settings
from producers.job import parse_job
from tests.support.dumps import database_bytes, redis_dump
from tests.support.env import SECRET
from tests.support.fake_google import FakeGoogle, bad_request, rate_limited, server_error
from tests.support.fleet import USER_CHANNELS, Fleet, running_fleet
from tests.support.services import free_port, wait_for
from worker.accounts.connected import GmailAccount
from worker.channels.base import Envelope, Receipt
from worker.channels.gmail import GmailChannel
from worker.errors import DeliveryError, PermanentError, TransientError
from worker.message.build import build_message

CLIENT_ID, CLIENT_SECRET = "test-client.apps.example", "deployment-client-secret-0xC0FFEE"


@pytest.fixture
def fake(google: FakeGoogle) -> FakeGoogle:
    google.reset()
    return google


# -- the channel in this process -----------------------------------------------------------------
def _job(**overrides: Any) -> Any:
    return parse_job(
        {
            "owner": "o1",
            "channel": "gmail",
            "identity": "Ann Example <ann@acme.example>",
            "to": ["bob@example.org"],
            "cc": ["carol@example.org"],
            "bcc": ["dave@example.net"],
            "subject": "Quarterly report",
            "text": "Hello Bob\n",
        }
        | overrides
    )


def _send(fake: FakeGoogle, api_url: str | None = None, times: int = 1) -> list[Any]:
    """Deliver one job ``times`` times through a fresh channel; each result or error."""
    refresh = fake.grant("ann@gmail.com", CLIENT_ID, CLIENT_SECRET)
    account = GmailAccount("o1", "ann@gmail.com", CLIENT_ID, CLIENT_SECRET, refresh)
    settings = Settings(
        secret_key=SECRET, gmail_api_url=api_url or fake.url, google_token_uri=fake.token_uri
    )
    job = _job()

    async def run() -> list[Any]:
        channel = GmailChannel(settings)
        options = channel.message_options(job, account)
        message = build_message(job, domain=options.domain, from_address=options.from_address)
        envelope = Envelope(options.mail_from, tuple(job.recipients))
        results: list[Any] = []
        try:
            for _ in range(times):
                try:
                    results.append(await channel.deliver(message, envelope, account))
                except DeliveryError as exc:
                    results.append(exc)
        finally:
            await channel.close()
        return results

    return asyncio.run(asyncio.wait_for(run(), 30))


def test_raw_message_from_the_connected_address_with_bcc(fake: FakeGoogle) -> None:
    (receipt,) = _send(fake)
    assert isinstance(receipt, Receipt) and receipt.provider_id == fake.sent[0].gmail_id
    sent = fake.sent[0]
    msg = sent.message
    assert sent.account == "ann@gmail.com"
    assert str(msg["From"]) == "Ann Example <ann@gmail.com>"
    assert (
        msg["Subject"] == "Quarterly report"
        and msg.get_content().replace("\r\n", "\n") == "Hello Bob\n"
    )
    assert msg["Message-ID"].endswith("@gmail.com>")
    # Gmail takes recipients from headers: the Bcc goes in a header Gmail strips on sending
    assert sorted(sent.recipients) == ["bob@example.org", "carol@example.org", "dave@example.net"]
    assert fake.log.token_requests == ["ok"]


def test_429_is_transient_with_googles_delay(fake: FakeGoogle) -> None:
    fake.script(*rate_limited(retry_after=42))
    status, body, _ = rate_limited()
    body["error"]["message"] = "User-rate limit exceeded.  Retry after " + (
        (datetime.now(UTC) + timedelta(seconds=300)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    )
    fake.script(status, body)
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    fake.script(*rate_limited()[:2], {"Retry-After": when})
    first, second, third = _send(fake, times=3)
    assert isinstance(first, TransientError) and first.retry_after == 42
    assert isinstance(second, TransientError) and 290 < (second.retry_after or 0) <= 300
    assert isinstance(third, TransientError) and 110 < (third.retry_after or 0) <= 120
    assert "rateLimitExceeded" in first.text


@pytest.mark.parametrize(
    ("answer", "kind", "words"),
    [
        (bad_request("invalidArgument", "Invalid To header"), "rejected", "Invalid To header"),
        (
            (
                403,
                {
                    "error": {
                        "code": 403,
                        "message": "Request had insufficient authentication scopes.",
                        "errors": [{"reason": "insufficientPermissions"}],
                    }
                },
                {},
            ),
            "auth",
            "permission to send",
        ),
        (
            (
                403,
                {
                    "error": {
                        "code": 403,
                        "message": "User-rate limit exceeded",
                        "errors": [{"reason": "userRateLimitExceeded"}],
                    }
                },
                {},
            ),
            None,
            "userRateLimitExceeded",
        ),
        (server_error(), None, "backendError"),
    ],
)
def test_other_answers(fake: FakeGoogle, answer: Any, kind: str | None, words: str) -> None:
    fake.script(*answer)
    (error,) = _send(fake)
    assert isinstance(error, PermanentError if kind else TransientError), error
    if kind:
        assert error.kind == kind
    assert words in error.text
    assert fake.sent == []


def test_unreachable_api_is_transient(fake: FakeGoogle) -> None:
    (error,) = _send(fake, api_url=f"http://127.0.0.1:{free_port()}")
    assert isinstance(error, TransientError) and "unreachable" in error.text


def test_401_twice_is_an_auth_failure(fake: FakeGoogle) -> None:
    unauthorized = (401, {"error": {"code": 401, "message": "Invalid Credentials"}})
    fake.script(*unauthorized)
    fake.script(*unauthorized)
    (error,) = _send(fake)
    assert isinstance(error, PermanentError) and error.kind == "auth"
    # 401, one refresh, one retry, 401 again: given up, without a third try
    assert [s for _, s in fake.log.send_requests] == [401, 401]
    assert fake.log.token_requests == ["ok", "ok"]


def test_wrong_oauth_client_is_a_config_error(fake: FakeGoogle) -> None:
    refresh = fake.grant("ann@gmail.com", CLIENT_ID, "another-secret")
    account = GmailAccount("o1", "ann@gmail.com", CLIENT_ID, CLIENT_SECRET, refresh)
    settings = Settings(secret_key=SECRET, gmail_api_url=fake.url, google_token_uri=fake.token_uri)
    job = _job()

    async def run() -> DeliveryError:
        channel = GmailChannel(settings)
        message = build_message(job, domain="gmail.com", from_address="ann@gmail.com")
        try:
            await channel.deliver(message, Envelope("ann@gmail.com", ("bob@example.org",)), account)
        except DeliveryError as exc:
            return exc
        finally:
            await channel.close()
        raise AssertionError("delivered")

    error = asyncio.run(run())
    assert isinstance(error, PermanentError) and error.kind == "config"
    assert "invalid_client" in error.text and "another-secret" not in error.text


# -- a real worker ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gfleet(google: FakeGoogle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    google_env = {
        "MAILDISPATCH_GMAIL_API_URL": google.url,
        "MAILDISPATCH_GOOGLE_TOKEN_URI": google.token_uri,
        "MAILDISPATCH_GOOGLE_CLIENT_ID": CLIENT_ID,
        "MAILDISPATCH_GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
    }
    tmp = tmp_path_factory.mktemp("gmail-fleet")
    with running_fleet(tmp, "mail.gmail", env=USER_CHANNELS | google_env) as fleet:
        yield fleet


@pytest.fixture
def owner(gfleet: Fleet, fake: FakeGoogle) -> Iterator[str]:
    name = f"user-{uuid.uuid4().hex[:8]}"
    yield name
    gfleet.forget(name)


def _connect(fleet: Fleet, owner: str, refresh: str, email: str = "ann@gmail.com") -> None:
    """Connect through the CLI, the refresh token on stdin."""
    shown = fleet.cli_json(
        "accounts", "gmail", "connect", "--owner", owner, "--email", email,
        "--refresh-token-stdin", stdin=refresh + "\n",
    )  # fmt: skip
    assert shown["state"] == "connected" and shown["email"] == email


def _job_for(owner: str, **overrides: Any) -> dict[str, Any]:
    return {
        "owner": owner,
        "channel": "gmail",
        "identity": "Ann Example <ann@acme.example>",
        "to": ["bob@example.org"],
        "subject": "Hello from Gmail",
        "text": "Hi Bob\n",
    } | overrides


def test_job_arrives_from_the_connected_account(
    gfleet: Fleet, fake: FakeGoogle, owner: str
) -> None:
    _connect(gfleet, owner, fake.grant("ann@gmail.com", CLIENT_ID, CLIENT_SECRET))
    job_id = gfleet.dispatcher.send(_job_for(owner, bcc=["hidden@example.net"]))
    assert gfleet.wait_final([job_id]) == {str(job_id): "sent"}
    (sent,) = fake.messages_for("ann@gmail.com")
    assert str(sent.message["From"]) == "Ann Example <ann@gmail.com>"
    assert sent.message["Message-ID"] == f"<{job_id}@gmail.com>"
    assert sorted(sent.recipients) == ["bob@example.org", "hidden@example.net"]
    status = gfleet.status(job_id)
    assert status["channel"] == "gmail" and status["state"] == "sent"
    assert status["from_address"] == "ann@gmail.com" and status["from_replaced"] == "yes"
    assert status["identity"] == "Ann Example <ann@acme.example>"
    assert status["provider_id"] == sent.gmail_id and status["attempts"] == "1"
    assert sent.gmail_id in status["reply"]


def test_a_batch_shares_one_refresh(gfleet: Fleet, fake: FakeGoogle, owner: str) -> None:
    _connect(gfleet, owner, fake.grant("ann@gmail.com", CLIENT_ID, CLIENT_SECRET))
    ids = gfleet.dispatcher.send_many(
        [_job_for(owner, to=[f"r{i}@example.org"]) for i in range(12)]
    )
    assert set(gfleet.wait_final(ids).values()) == {"sent"}
    assert len(fake.messages_for("ann@gmail.com")) == 12
    assert fake.log.token_requests == ["ok"]  # 12 concurrent sends, one token refresh


def test_expired_access_token_is_refreshed_before_sending(
    gfleet: Fleet, fake: FakeGoogle, owner: str
) -> None:
    fake.expires_in = 2  # the fake refuses each token 2 s after it was issued
    _connect(gfleet, owner, fake.grant("ann@gmail.com", CLIENT_ID, CLIENT_SECRET))
    first = gfleet.dispatcher.send(_job_for(owner))
    gfleet.wait_final([first])
    time.sleep(2.5)
    second = gfleet.dispatcher.send(_job_for(owner))
    assert gfleet.wait_final([second]) == {str(second): "sent"}
    assert fake.log.token_requests == ["ok", "ok"]
    sends = fake.log.send_requests
    assert [s for _, s in sends] == [200, 200]  # never a 401: refreshed first
    assert sends[0][0] != sends[1][0]


def test_401_refreshes_and_retries_in_the_same_attempt(
    gfleet: Fleet, fake: FakeGoogle, owner: str
) -> None:
    _connect(gfleet, owner, fake.grant("ann@gmail.com", CLIENT_ID, CLIENT_SECRET))
    gfleet.wait_final([gfleet.dispatcher.send(_job_for(owner))])
    fake.expire_access_tokens()
    job_id = gfleet.dispatcher.send(_job_for(owner))
    assert gfleet.wait_final([job_id]) == {str(job_id): "sent"}
    assert (gfleet.dispatcher.status(job_id) or {})["attempts"] == "1"
    assert [s for _, s in fake.log.send_requests] == [200, 401, 200]


def test_429_is_retried_then_delivered(gfleet: Fleet, fake: FakeGoogle, owner: str) -> None:
    _connect(gfleet, owner, fake.grant("ann@gmail.com", CLIENT_ID, CLIENT_SECRET))
    fake.script(*rate_limited(retry_after=1))
    started = time.monotonic()
    job_id = gfleet.dispatcher.send(_job_for(owner))
    assert gfleet.wait_final([job_id]) == {str(job_id): "sent"}
    assert (gfleet.dispatcher.status(job_id) or {})["attempts"] == "2"
    assert time.monotonic() - started >= 1.0  # Google's Retry-After, over the 0.3 s backoff
    assert [s for _, s in fake.log.send_requests] == [429, 200]
    assert len(fake.messages_for("ann@gmail.com")) == 1


def test_invalid_grant_needs_reconnect_and_one_failed_send(
    gfleet: Fleet, fake: FakeGoogle, owner: str
) -> None:
    refresh = fake.grant("ann@gmail.com", CLIENT_ID, CLIENT_SECRET)
    _connect(gfleet, owner, refresh)
    fake.revoke(refresh)
    job_id = gfleet.dispatcher.send(_job_for(owner))
    assert gfleet.wait_final([job_id]) == {str(job_id): "failed"}
    assert (gfleet.dispatcher.status(job_id) or {})["attempts"] == "1"  # never retried
    failed = gfleet.status(job_id)["failed_sends"]
    assert [(f["kind"], f["recipient"]) for f in failed] == [("auth", "bob@example.org")]
    assert "reconnect the Gmail account" in failed[0]["diagnostic"]
    account = gfleet.account(owner, "gmail")
    assert account["state"] == "needs_reconnect" and "invalid_grant" in account["last_error"]
    assert fake.log.token_requests == ["invalid_grant"]

    # the next job fails at once, without asking Google again
    second = gfleet.dispatcher.send(_job_for(owner))
    assert gfleet.wait_final([second]) == {str(second): "failed"}
    assert fake.log.token_requests == ["invalid_grant"]
    assert "reconnect" in gfleet.status(second)["failed_sends"][0]["diagnostic"]

    # reconnecting (a new grant) makes the account usable again
    _connect(gfleet, owner, fake.grant("ann@gmail.com", CLIENT_ID, CLIENT_SECRET))
    time.sleep(2.2)  # the worker keeps an account's record for 2 s
    third = gfleet.dispatcher.send(_job_for(owner))
    assert gfleet.wait_final([third]) == {str(third): "sent"}


def test_job_without_channel_follows_the_preference(
    gfleet: Fleet, fake: FakeGoogle, owner: str
) -> None:
    out = gfleet.cli("accounts", "prefer", "--owner", owner, "--channel", "gmail")
    assert out.returncode == 2 and "no Gmail account" in out.stderr  # connect first
    _connect(gfleet, owner, fake.grant("ann@gmail.com", CLIENT_ID, CLIENT_SECRET))
    assert gfleet.cli("accounts", "prefer", "--owner", owner, "--channel", "gmail").returncode == 0
    job = _job_for(owner)
    del job["channel"]
    job_id = gfleet.dispatcher.send(job)
    assert gfleet.wait_final([job_id]) == {str(job_id): "sent"}
    assert gfleet.status(job_id)["channel"] == "gmail"
    assert len(fake.messages_for("ann@gmail.com")) == 1
    # removing the account sends the owner's jobs back to MSC
    out = gfleet.cli("accounts", "remove", "--owner", owner, "--channel", "gmail")
    assert out.returncode == 0 and "go to msc" in out.stdout
    [entry] = gfleet.cli_json("accounts", "list", "--owner", owner)
    assert entry == {"owner": owner, "preferred_channel": "msc", "accounts": []}


def test_no_secret_in_the_clear_in_database_redis_or_logs(
    gfleet: Fleet, fake: FakeGoogle, owner: str
) -> None:
    client_secret = f"own-client-secret-{uuid.uuid4().hex}"
    refresh = fake.grant("ann@gmail.com", "own-client", client_secret)
    out = gfleet.cli(
        "accounts", "gmail", "connect", "--owner", owner, "--email", "ann@gmail.com",
        "--refresh-token-stdin", "--client-id", "own-client", "--client-secret-stdin",
        stdin=f"{refresh}\n{client_secret}\n",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    ok = gfleet.dispatcher.send(_job_for(owner))
    gfleet.wait_final([ok])
    fake.expire_access_tokens()  # a 401, a refresh, a retry
    fake.revoke(refresh)  # then invalid_grant: a Failed Send with Google's words
    failed = gfleet.dispatcher.send(_job_for(owner))
    assert gfleet.wait_final([failed]) == {str(failed): "failed"}
    listing = gfleet.cli("accounts", "list", "--owner", owner)
    status = gfleet.cli("status", str(failed), "--json")
    access_tokens = [t for t, _ in fake.log.send_requests]
    assert len(access_tokens) >= 1
    wait_for(lambda: "delivery_failed" in gfleet.logs(), 10, what="the worker's log")
    haystacks = {
        "database": database_bytes(gfleet.database_file),
        "redis": redis_dump(gfleet.redis),
        "logs": gfleet.logs().encode(),
        "cli": (out.stdout + out.stderr + listing.stdout + status.stdout).encode(),
    }
    for secret in [refresh, client_secret, CLIENT_SECRET, *access_tokens]:
        for where, data in haystacks.items():
            assert secret.encode() not in data, f"a secret is in the {where}"
    assert b"ann@gmail.com" in haystacks["database"]  # the search itself works
