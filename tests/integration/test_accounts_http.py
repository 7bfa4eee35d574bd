"""Accounts over HTTP, as a product uses them: "Connect your Gmail" and "Connect Microsoft 365"
through the providers' consent pages (local fakes of Google's and Microsoft's authorization and
token endpoints, PKCE and ``state`` checked), then mail sent through what was connected by real
workers (the Gmail API fake; an XOAUTH2-only SMTP server standing in for Exchange Online); a
custom SMTP server set, the preference chosen, an account removed; owner-bound keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support import fake_google, fake_microsoft
from tests.support.api import bearer, new_key, serve
from tests.support.auth_smtpd import Pki, XOAuth2Handler
from tests.support.fake_google import FakeGoogle
from tests.support.fake_microsoft import FakeMicrosoft
from tests.support.fleet import USER_CHANNELS, Fleet, running_fleet
from tests.support.relay import Relay
from tests.support.services import free_port
from worker.api.app import create_app
from worker.store import open_store

RETURN_TO = "https://app.example/settings?tab=mail"
MAILBOX = "ann@contoso.example"


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    microsoft: FakeMicrosoft,
    google: FakeGoogle,
    exchange: Relay,
) -> Iterator[tuple[Fleet, str]]:
    """Workers for mail.smtp and mail.gmail, and the API at the public URL the fleet names."""
    port = free_port()
    env = USER_CHANNELS | {
        "MAILDISPATCH_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "MAILDISPATCH_MICROSOFT_AUTHORIZE_URI": microsoft.authorize_uri,
        "MAILDISPATCH_MICROSOFT_TOKEN_URI": microsoft.token_uri,
        "MAILDISPATCH_MICROSOFT_CLIENT_ID": fake_microsoft.APP_ID,
        "MAILDISPATCH_MICROSOFT_CLIENT_SECRET": fake_microsoft.APP_SECRET,
        # Exchange Online is this local server (as a national cloud's would be configured),
        # whose certificate the system trust store holds for these processes
        "MAILDISPATCH_MICROSOFT_SMTP_SERVER": f"127.0.0.1:{exchange.port}",
        "SSL_CERT_FILE": str(pki.ca_file),
        "MAILDISPATCH_GOOGLE_AUTHORIZE_URI": google.authorize_uri,
        "MAILDISPATCH_GOOGLE_TOKEN_URI": google.token_uri,
        "MAILDISPATCH_GMAIL_API_URL": google.url,
        "MAILDISPATCH_GOOGLE_CLIENT_ID": fake_google.APP_ID,
        "MAILDISPATCH_GOOGLE_CLIENT_SECRET": fake_google.APP_SECRET,
    }
    with running_fleet(tmp_path_factory.mktemp("accounts-http"), "mail.smtp", env=env) as fleet:
        fleet.worker("mail.gmail")
        with serve(create_app(fleet.settings), port) as url:
            yield fleet, url


@pytest.fixture
def owner(site: tuple[Fleet, str], microsoft: FakeMicrosoft, google: FakeGoogle) -> Iterator[str]:
    microsoft.reset()
    google.reset()
    name = f"acct-{uuid.uuid4().hex[:8]}"
    yield name
    site[0].forget(name)


@pytest.fixture
def api(site: tuple[Fleet, str], owner: str) -> Iterator[httpx.Client]:
    """A client with a key for ``owner`` only (send and read)."""
    key = new_key(open_store(site[0].database_url), f"product-{owner}", owner=owner)
    with httpx.Client(base_url=site[1], headers=bearer(key), timeout=30) as client:
        yield client


def _authorize(api: httpx.Client, kind: str, owner: str, **extra: Any) -> str:
    answer = api.post(f"/v1/accounts/{kind}/authorize", json={"owner": owner, **extra})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["authorization_url"])


def _browser(url: str) -> httpx.Response:
    """One step of the user's browser (redirects are looked at, not followed)."""
    return httpx.get(url, follow_redirects=False, timeout=30)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _job(owner: str, channel: str) -> dict[str, Any]:
    return {
        "owner": owner,
        "channel": channel,
        "identity": "Ann <ann@acme.example>",
        "to": ["bob@example.org"],
        "subject": "Sent as the connected account",
        "text": "Hi\n",
    }


def test_connect_microsoft_365_then_send_through_exchange_with_xoauth2(
    site: tuple[Fleet, str], api: httpx.Client, microsoft: FakeMicrosoft, exchange: Relay,
    owner: str,
) -> None:  # fmt: skip
    fleet, url = site
    consent = _authorize(api, "microsoft", owner, return_to=RETURN_TO)
    assert consent.startswith(microsoft.authorize_uri + "?")
    asked = _query(consent)
    assert asked["redirect_uri"] == f"{url}/v1/oauth/callback"
    assert asked["code_challenge_method"] == "S256" and len(asked["state"]) >= 32
    assert {"https://outlook.office.com/SMTP.Send", "offline_access"} <= set(asked["scope"].split())

    microsoft.codes.user = MAILBOX  # the user signs in and consents
    back = _browser(consent)
    assert back.status_code == 302 and back.headers["location"].startswith(asked["redirect_uri"])
    done = _browser(back.headers["location"])
    assert done.status_code == 303
    assert done.headers["location"] == f"{RETURN_TO}&connected=microsoft"

    (entry,) = api.get("/v1/accounts", params={"owner": owner}).json()
    (account,) = entry["accounts"]
    assert (account["channel"], account["auth"], account["provider"], account["username"]) == (
        "smtp",
        "xoauth2",
        "microsoft",
        MAILBOX,
    )
    assert account["state"] == "connected" and "refresh" not in str(entry)

    job_id = fleet.dispatcher.send(_job(owner, "smtp"))
    assert fleet.wait_final([job_id]) == {str(job_id): "sent"}
    handler = exchange.handler
    assert isinstance(handler, XOAuth2Handler)
    assert [(x.mechanism, x.username, x.success) for x in handler.logins][-1:] == [
        ("XOAUTH2", MAILBOX, True)
    ]

    # the same callback again (a reload, or a replay): the state was used up
    again = _browser(back.headers["location"])
    assert again.status_code == 400 and "not valid" in again.text


def test_connect_gmail_then_send_from_the_connected_address(
    site: tuple[Fleet, str], api: httpx.Client, google: FakeGoogle, owner: str
) -> None:
    fleet, _ = site
    consent = _authorize(api, "gmail", owner)  # no return_to: a page says it is done
    asked = _query(consent)
    assert consent.startswith(google.authorize_uri + "?")
    assert asked["access_type"] == "offline" and "gmail.send" in asked["scope"]
    google.codes.user = "ann.connected@gmail.com"
    done = _browser(_browser(consent).headers["location"])
    assert done.status_code == 200 and "ann.connected@gmail.com" in done.text

    job_id = fleet.dispatcher.send(_job(owner, "gmail"))
    assert fleet.wait_final([job_id]) == {str(job_id): "sent"}
    (sent,) = google.messages_for("ann.connected@gmail.com")
    assert "ann.connected@gmail.com" in str(sent.message["From"])


def test_a_forged_or_swapped_callback_connects_nothing(
    site: tuple[Fleet, str], api: httpx.Client, microsoft: FakeMicrosoft, owner: str
) -> None:
    _, url = site
    assert _browser(f"{url}/v1/oauth/callback?code=abc&state=forged").status_code == 400

    # a code issued to one flow, brought back with another flow's state (a stolen code): the
    # second flow's PKCE verifier does not match, the provider refuses, nothing is stored
    first = _authorize(api, "microsoft", owner, return_to=RETURN_TO)
    second = _authorize(api, "microsoft", owner, return_to=RETURN_TO)
    microsoft.codes.user = MAILBOX
    code = _query(_browser(first).headers["location"])["code"]
    swapped = f"{url}/v1/oauth/callback?code={code}&state={_query(second)['state']}"
    refused = _browser(swapped)
    assert refused.status_code == 303
    assert refused.headers["location"] == f"{RETURN_TO}&error=not_connected"
    assert microsoft.codes.refusals == ["code_verifier"]
    assert api.get("/v1/accounts", params={"owner": owner}).json() == []

    # the user refuses consent: sent back with the provider's error, nothing stored
    microsoft.codes.user = None
    back = _browser(_browser(_authorize(api, "microsoft", owner, return_to=RETURN_TO)).headers[
        "location"
    ])  # fmt: skip
    assert back.headers["location"] == f"{RETURN_TO}&error=access_denied"
    assert api.get("/v1/accounts", params={"owner": owner}).json() == []


def test_smtp_preference_and_removal_over_http(
    site: tuple[Fleet, str], api: httpx.Client, owner: str
) -> None:
    fleet, _ = site
    secret = f"pw-{uuid.uuid4().hex}"
    server = {
        "host": "smtp.example.net",
        "port": 587,
        "security": "starttls",
        "username": "ann",
        "password": secret,
    }
    made = api.put(f"/v1/accounts/{owner}/smtp", json=server)
    assert made.status_code == 200, made.text
    assert made.json()["host"] == "smtp.example.net" and secret not in made.text
    for bad in ({"port": 0}, {"security": "ssl"}, {"host": "10.0.0.7"}):
        answer = api.put(f"/v1/accounts/{owner}/smtp", json=server | bad)
        assert answer.status_code == 422, (bad, answer.text)
        assert secret not in answer.text

    assert api.put(f"/v1/accounts/{owner}/preferred", json={"channel": "gmail"}).status_code == 422
    chosen = api.put(f"/v1/accounts/{owner}/preferred", json={"channel": "smtp"})
    assert chosen.status_code == 200 and chosen.json()["preferred_channel"] == "smtp"
    job_id = fleet.dispatcher.send({k: v for k, v in _job(owner, "smtp").items() if k != "channel"})
    assert fleet.status(job_id)["channel"] == "smtp"  # a job that names none follows it

    assert api.delete(f"/v1/accounts/{owner}/smtp").status_code == 204
    (entry,) = api.get("/v1/accounts", params={"owner": owner}).json()
    assert entry == {"owner": owner, "preferred_channel": "msc", "accounts": []}
    assert api.delete(f"/v1/accounts/{owner}/smtp").status_code == 404
    assert api.delete(f"/v1/accounts/{owner}/msc").status_code == 422


def test_a_key_for_one_owner_manages_that_owner_only(
    site: tuple[Fleet, str], api: httpx.Client, owner: str
) -> None:
    other = f"{owner}-other"
    assert api.post("/v1/accounts/gmail/authorize", json={"owner": other}).status_code == 403
    server = {"host": "smtp.example.net", "port": 587, "username": "u", "password": "p"}
    assert api.put(f"/v1/accounts/{other}/smtp", json=server).status_code == 403
    assert api.put(f"/v1/accounts/{other}/preferred", json={"channel": "msc"}).status_code == 403
    assert api.get("/v1/accounts", params={"owner": other}).status_code == 403
    assert api.delete(f"/v1/accounts/{other}/smtp").status_code == 403
    assert httpx.get(f"{site[1]}/v1/accounts").status_code == 401  # no key at all


def test_without_an_id_token_the_mailbox_comes_from_the_hint_or_gmail(
    site: tuple[Fleet, str], api: httpx.Client, microsoft: FakeMicrosoft, google: FakeGoogle,
    owner: str,
) -> None:  # fmt: skip
    microsoft.id_tokens = google.id_tokens = False
    consent = _authorize(api, "microsoft", owner, email=MAILBOX)
    assert _query(consent)["login_hint"] == MAILBOX
    microsoft.codes.user = MAILBOX
    assert _browser(_browser(consent).headers["location"]).status_code == 200
    google.codes.user = "no.id.token@gmail.com"
    done = _browser(_browser(_authorize(api, "gmail", owner)).headers["location"])
    assert done.status_code == 200 and "no.id.token@gmail.com" in done.text  # users.getProfile
    (entry,) = api.get("/v1/accounts", params={"owner": owner}).json()
    addresses = {a["channel"]: a.get("email") or a.get("username") for a in entry["accounts"]}
    assert addresses == {"smtp": MAILBOX, "gmail": "no.id.token@gmail.com"}
