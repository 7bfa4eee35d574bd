"""``maildispatch bounce-poll`` against a real Dovecot IMAP server and a real Redis broker.

A message leaves the mailbox (or is marked seen) only after it is on ``mail.bounces``; with the
broker down the command fails with 75 and the mailbox is left exactly as it was.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import SECRET
from tests.support.bounces import render
from tests.support.dovecot import PASSWORD, Dovecot
from tests.support.queue import task_body
from tests.support.services import REPO, free_port
from worker.returnpath import return_path

DOMAIN = "bounces.operator.test"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot().start()
    yield server
    server.stop()


@pytest.fixture
def mailbox(dovecot: Dovecot) -> Iterator[Dovecot]:
    """The INBOX, emptied before and after the test."""

    def empty() -> None:
        conn = dovecot.client()
        _, count = conn.select("INBOX")
        if count[0] != b"0":
            conn.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
            conn.expunge()
        conn.logout()

    empty()
    yield dovecot
    empty()


def append(server: Dovecot, raw: bytes, flags: str = "") -> None:
    conn = server.client()
    typ, data = conn.append("INBOX", flags or None, None, raw)
    assert typ == "OK", data
    conn.logout()


def inbox(server: Dovecot) -> dict[str, str]:
    """Subject -> flags of every message in the INBOX."""
    conn = server.client()
    _, count = conn.select("INBOX", readonly=True)
    if count[0] == b"0":
        conn.logout()
        return {}
    _, data = conn.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    conn.logout()
    found: dict[str, str] = {}
    for item in data:
        if isinstance(item, tuple):
            subject = item[1].decode().split(":", 1)[1].strip()
            found[subject] = item[0].decode()
    return found


def bounce(subject: str) -> bytes:
    rp = return_path(uuid.uuid4(), SECRET, DOMAIN)
    raw = render("postfix-userunknown", RETURN_PATH=rp, RECIPIENT="gone@example.org")
    return raw.replace(
        b"Subject: Undelivered Mail Returned to Sender", f"Subject: {subject}".encode()
    )


def poll(
    server: Dovecot, broker_url: str, *extra: str, tls: bool = True, password: str = PASSWORD
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    env |= {
        "MAILDISPATCH_BROKER_URL": broker_url,
        "MAILDISPATCH_SECRET_KEY": SECRET,
        "MAILDISPATCH_BOUNCE_DOMAIN": DOMAIN,
        "MAILDISPATCH_BOUNCE_PUBLISH_TIMEOUT": "2s",
        "MAILDISPATCH_BOUNCE_IMAP_PASSWORD": password,
        "MAILDISPATCH_LOG_FORMAT": "json",
    }
    args = ["bounce-poll", "--imap", server.url(tls=tls), "--once", "--ca-file", str(server.cafile)]
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args, *extra],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def queued(client: redis.Redis) -> list[bytes]:
    """The raw messages on mail.bounces, oldest first."""
    found = []
    for message in reversed(client.lrange("mail.bounces", 0, -1)):
        body = task_body(message)
        found.append(base64.b64decode(body[0][0]["raw"]))
    return found


def test_unseen_messages_are_enqueued_then_expunged(
    mailbox: Dovecot, redis_url: str, redis_client: redis.Redis
) -> None:
    first, second = bounce("report one"), bounce("report two")
    append(mailbox, first)
    append(mailbox, second)
    append(mailbox, bounce("already read"), flags="(\\Seen)")
    out = poll(mailbox, redis_url)
    assert out.returncode == 0, out.stderr
    assert queued(redis_client) == [first, second]
    assert list(inbox(mailbox)) == ["already read"]
    assert PASSWORD not in out.stdout + out.stderr
    # nothing new: a second round enqueues nothing
    assert poll(mailbox, redis_url).returncode == 0
    assert len(queued(redis_client)) == 2


def test_broker_down_leaves_the_mailbox_untouched(
    mailbox: Dovecot, redis_url: str, redis_client: redis.Redis
) -> None:
    append(mailbox, bounce("kept"))
    out = poll(mailbox, f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    assert out.returncode == 75, out.stderr
    assert "bounce_poll_enqueue_failed" in out.stderr + out.stdout
    flags = inbox(mailbox)
    assert list(flags) == ["kept"] and "\\Seen" not in flags["kept"]
    assert "\\Deleted" not in flags["kept"]
    # the broker is back: the next round takes it
    assert poll(mailbox, redis_url).returncode == 0
    assert len(queued(redis_client)) == 1 and inbox(mailbox) == {}


def test_mark_seen_over_starttls_keeps_the_messages(
    mailbox: Dovecot, redis_url: str, redis_client: redis.Redis
) -> None:
    append(mailbox, bounce("keep me"))
    out = poll(mailbox, redis_url, "--mark-seen", tls=False)  # imap:// upgrades with STARTTLS
    assert out.returncode == 0, out.stderr
    assert len(queued(redis_client)) == 1
    assert "\\Seen" in inbox(mailbox)["keep me"]
    assert poll(mailbox, redis_url, "--mark-seen", tls=False).returncode == 0
    assert len(queued(redis_client)) == 1


def test_wrong_password_fails_without_showing_it(
    mailbox: Dovecot, redis_url: str, redis_client: redis.Redis
) -> None:
    append(mailbox, bounce("untouched"))
    out = poll(mailbox, redis_url, password="not-the-password-123")
    assert out.returncode == 75
    assert "not-the-password-123" not in out.stdout + out.stderr
    assert queued(redis_client) == [] and list(inbox(mailbox)) == ["untouched"]
