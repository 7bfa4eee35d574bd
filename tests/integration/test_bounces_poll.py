"""``maildispatch bounce-poll`` against a real Dovecot IMAP server and a real Redis broker.

A message leaves the mailbox (or is marked seen) only after it is on ``mail.bounces``; with the
broker down the command fails with 75 and the mailbox is left exactly as it was.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config import keys
from tests.support.bounces import render
from tests.support.dovecot import PASSWORD, Dovecot
from tests.support.env import SECRET
from tests.support.queue import task_body
from tests.support.services import REPO, free_port
from worker.bounces.intake.poll import MailboxUrl
from worker.message.returnpath import return_path

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
    server: Dovecot,
    broker_url: str,
    *extra: str,
    tls: bool = True,
    password: str = PASSWORD,
    settings: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    env |= (settings or {}) | {
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
        timeout=30,
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


# -- messages the poller cannot take: skipped, noted, never ahead of the rest ----------------


def padded(subject: str, pad: int, *, in_notice: bool) -> bytes:
    """A bounce of about ``pad`` more bytes: in its own notice, or in the quoted original."""
    raw = bounce(subject)
    filler = b"".join(b"X-Pad-%06d: %s\r\n" % (i, b"p" * 60) for i in range(pad // 76 + 1))
    if in_notice:
        return raw.replace(b"The mail system\r\n", b"The mail system\r\n\r\n" + filler, 1)
    last = raw.rindex(b"\r\n--")  # the end of the quoted headers, before the closing boundary
    return raw[:last] + b"\r\n" + filler.rstrip(b"\r\n") + raw[last:]


def dead_letters(client: redis.Redis) -> list[dict[str, object]]:
    metas = client.hgetall(keys.BOUNCE_DEAD_META)
    return sorted((json.loads(m) for m in metas.values()), key=lambda m: m["at"])


def counters(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall("md:counters").items()}


def message_file(server: Dovecot, subject: str) -> Path:
    """The Maildir file holding the message with this subject."""
    for path in (server.dir / "mail").rglob("*"):
        if (
            path.parent.name in ("new", "cur")
            and path.is_file()
            and re.search(rb"Subject: %s\r?\n" % subject.encode(), path.read_bytes())
        ):
            return path
    raise AssertionError(f"no message file for {subject!r}")


def test_oversized_message_is_skipped_noted_and_the_rest_enqueued(
    mailbox: Dovecot, redis_url: str, redis_client: redis.Redis
) -> None:
    first, huge, last = bounce("before"), padded("huge", 300_000, in_notice=True), bounce("after")
    for raw in (first, huge, last):
        append(mailbox, raw)
    cap = {"MAILDISPATCH_BOUNCE_POLL_MAX_BYTES": "100000"}
    out = poll(mailbox, redis_url, settings=cap)
    assert out.returncode == 0, out.stderr
    assert queued(redis_client) == [first, last]  # never fetched: only the small ones queued
    flags = inbox(mailbox)
    assert list(flags) == ["huge"]  # left in the mailbox, not deleted
    assert "\\Seen" in flags["huge"] and "\\Flagged" in flags["huge"]
    [entry] = dead_letters(redis_client)
    assert entry["why"] == "poll_too_large" and entry["size"] == len(huge)
    assert entry["uid"] and "INBOX" in str(entry["mailbox"]) and entry["retryable"] is False
    wire = json.loads(redis_client.hget(keys.BOUNCE_DEAD_WIRE, str(entry["id"])) or b"{}")
    assert b"Subject: huge" in base64.b64decode(wire["head"])  # what could be fetched
    assert counters(redis_client)["bounces_dead_poll_too_large"] == 1
    skipped = [
        json.loads(line)
        for line in (out.stdout + out.stderr).splitlines()
        if "bounce_poll_skipped" in line
    ]
    assert skipped and skipped[0]["uid"] == entry["uid"] and skipped[0]["size"] == len(huge)
    # the next round neither takes it nor notes it again
    assert poll(mailbox, redis_url, settings=cap).returncode == 0
    assert len(queued(redis_client)) == 2 and len(dead_letters(redis_client)) == 1


def test_message_whose_fetch_fails_goes_last_then_is_skipped(
    mailbox: Dovecot, redis_url: str, redis_client: redis.Redis
) -> None:
    """Dovecot answers a FETCH of a file it cannot read with BYE: the round ends there."""
    first, broken, last = bounce("one"), bounce("unreadable"), bounce("three")
    for raw in (first, broken, last):
        append(mailbox, raw)
    message_file(mailbox, "unreadable").chmod(0)  # Dovecot's mail process cannot open it
    out = poll(mailbox, redis_url)
    assert out.returncode == 75, out.stderr  # the connection broke on the second message
    assert queued(redis_client) == [first]
    # the next round takes what came after it first, then fails on it once more
    newer = bounce("newer")
    append(mailbox, newer)
    assert poll(mailbox, redis_url).returncode == 75
    assert queued(redis_client) == [first, last, newer]
    assert dead_letters(redis_client) == []
    # failed twice: skipped (noted, flagged, kept) without another fetch; the round succeeds
    out = poll(mailbox, redis_url)
    assert out.returncode == 0, out.stderr
    flags = inbox(mailbox)
    assert list(flags) == ["unreadable"] and "\\Flagged" in flags["unreadable"]
    [entry] = dead_letters(redis_client)
    assert entry["why"] == "poll_fetch_failed" and entry["size"] == len(broken)
    assert "broke the connection 2 times" in str(entry["error"])
    assert counters(redis_client)["bounces_dead_poll_fetch_failed"] == 1
    assert redis_client.hlen("md:bounces:poll:failures") == 0
    assert poll(mailbox, redis_url).returncode == 0  # and never taken again
    assert len(queued(redis_client)) == 3 and len(dead_letters(redis_client)) == 1


def test_message_whose_fetch_broke_the_connection_goes_last_then_is_skipped(
    mailbox: Dovecot, redis_url: str, redis_client: redis.Redis
) -> None:
    """The count of broken fetches is what a round that died on a message leaves in Redis."""
    first, bad, last = bounce("first"), bounce("breaks the connection"), bounce("last")
    for raw in (first, bad, last):
        append(mailbox, raw)
    conn = mailbox.client()
    conn.select("INBOX", readonly=True)
    validity = conn.response("UIDVALIDITY")[1][0].decode()
    _, found = conn.uid("SEARCH", "ALL")
    conn.logout()
    bad_uid = found[0].split()[1].decode()
    where = f"{MailboxUrl.parse(mailbox.url())}|{validity}|{bad_uid}"
    redis_client.hset("md:bounces:poll:failures", where, 1)
    out = poll(mailbox, redis_url, "--mark-seen")
    assert out.returncode == 0, out.stderr
    assert queued(redis_client) == [first, last, bad]  # the one that failed before goes last
    assert not redis_client.hexists("md:bounces:poll:failures", where)  # taken: forgotten
    # failed twice: skipped without being fetched again
    again = bounce("breaks it again")
    append(mailbox, again)
    conn = mailbox.client()
    conn.select("INBOX", readonly=True)
    _, found = conn.uid("SEARCH", "UNSEEN")
    conn.logout()
    [again_uid] = found[0].split()
    redis_client.hset(
        "md:bounces:poll:failures", where.rsplit("|", 1)[0] + "|" + again_uid.decode(), 2
    )
    assert poll(mailbox, redis_url, "--mark-seen").returncode == 0
    assert len(queued(redis_client)) == 3
    [entry] = dead_letters(redis_client)
    assert entry["why"] == "poll_fetch_failed" and entry["uid"] == again_uid.decode()
    assert "\\Flagged" in inbox(mailbox)["breaks it again"]


def test_large_report_is_queued_with_its_quoted_original_cut(
    mailbox: Dovecot, redis_url: str, redis_client: redis.Redis
) -> None:
    long_original = padded("long original", 200_000, in_notice=False)
    long_notice = padded("long notice", 200_000, in_notice=True)
    append(mailbox, long_original)
    append(mailbox, long_notice)
    limit = {"MAILDISPATCH_BOUNCE_MAX_BYTES": "100000"}
    out = poll(mailbox, redis_url, settings=limit)
    assert out.returncode == 0, out.stderr
    [cut] = queued(redis_client)
    assert len(cut) <= 100_000 and cut.startswith(b"X-Maildispatch-Truncated: ")
    assert b"Subject: long original" in cut and b"Final-Recipient" in cut
    # a report whose own notice is over the limit is kept whole in the dead letters
    [entry] = dead_letters(redis_client)
    assert entry["why"] == "poll_too_large" and entry["retryable"] is True
    assert "\\Flagged" in inbox(mailbox)["long notice"]
