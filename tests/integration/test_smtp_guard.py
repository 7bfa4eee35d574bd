"""User SMTP servers cannot reach inside: a real smtp worker with the default policy (loopback,
private, link-local and unique-local networks blocked; no AUTH without TLS).

Accounts that the set-time check refuses are stored here the way they could exist anyway: set
while the operator allowed them (an older deployment, a changed setting), or under a host name
that resolves somewhere else by the time the worker connects (DNS rebinding). The worker must
refuse them at connect time, without ever opening a connection.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.support.banner_server import BannerServer
from tests.support.fleet import USER_CHANNELS, Fleet, running_fleet
from worker.channels.netguard import BLOCKED_TEXT
from worker.channels.smtp import PLAINTEXT_AUTH_REFUSED

GREETING = b"220 listener.test ESMTP\r\n"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # the default policy: nothing allowed beyond what the settings block
    guarded_env = USER_CHANNELS | {"MAILDISPATCH_SMTP_ALLOWED_NETWORKS": ""}
    with running_fleet(tmp_path_factory.mktemp("guarded"), "mail.smtp", env=guarded_env) as fleet:
        yield fleet


@pytest.fixture
def owner(guarded: Fleet) -> Iterator[str]:
    name = f"user-{uuid.uuid4().hex[:8]}"
    yield name
    guarded.forget(name)


@pytest.fixture
def listener() -> Iterator[BannerServer]:
    server = BannerServer(GREETING).start()
    yield server
    server.stop()


def _set(
    fleet: Fleet, owner: str, host: str, port: int, security: str = "starttls", **env: str
) -> subprocess.CompletedProcess[str]:
    args = [
        "accounts", "smtp", "set", "--owner", owner, "--host", host, "--port", str(port),
        "--security", security, "--username", "ann", "--password-stdin",
    ]  # fmt: skip
    # with ``env``, this one command runs as a deployment that allowed it
    return fleet.cli(*args, stdin="pw\n", env=env)


def _job(owner: str) -> dict[str, object]:
    return {
        "owner": owner,
        "channel": "smtp",
        "identity": "Ann <ann@acme.example>",
        "to": ["bob@example.org"],
        "subject": "hi",
        "text": "hi\n",
    }


# (every blocked network and its IPv6 forms: tests/unit/test_netguard.py, in-process)
@pytest.mark.parametrize(
    "host", ["127.0.0.2", "localhost", "[::1]", "10.0.0.25", "169.254.169.254", "fd12::1"]
)
def test_setting_an_internal_address_is_refused(guarded: Fleet, owner: str, host: str) -> None:
    out = _set(guarded, owner, host, 25)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "network" in out.stderr and "MAILDISPATCH_SMTP_BLOCKED_NETWORKS" in out.stderr
    assert guarded.cli_json("accounts", "list", "--owner", owner) == []


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_an_internal_server_is_never_connected_to(
    guarded: Fleet, owner: str, listener: BannerServer, host: str
) -> None:
    out = _set(
        guarded, owner, host, listener.port, MAILDISPATCH_SMTP_ALLOWED_NETWORKS="127.0.0.0/8"
    )
    assert out.returncode == 0, out.stderr
    job_id = guarded.dispatcher.send(_job(owner))
    assert guarded.wait_final([job_id]) == {str(job_id): "failed"}
    assert (guarded.dispatcher.status(job_id) or {})["attempts"] == "1"  # never retried
    (failed,) = guarded.status(job_id)["failed_sends"]
    assert failed["kind"] == "config" and failed["diagnostic"] == BLOCKED_TEXT
    assert str(listener.port) not in failed["diagnostic"]
    assert listener.connections == 0
    assert "smtp_destination_blocked" in guarded.logs()  # the operator sees where it pointed


def test_no_login_without_tls(guarded: Fleet, owner: str) -> None:
    # a public-looking name: the refusal comes before any lookup or connection
    out = _set(
        guarded,
        owner,
        "smtp.example.net",
        25,
        "none",
        MAILDISPATCH_SMTP_ALLOW_PLAINTEXT_AUTH="true",
    )
    assert out.returncode == 0, out.stderr
    job_id = guarded.dispatcher.send(_job(owner))
    assert guarded.wait_final([job_id]) == {str(job_id): "failed"}
    (failed,) = guarded.status(job_id)["failed_sends"]
    assert failed["kind"] == "auth" and failed["diagnostic"] == PLAINTEXT_AUTH_REFUSED
    account = guarded.account(owner, "smtp")
    assert account["state"] == "auth_failed" and "without TLS" in account["last_error"]
