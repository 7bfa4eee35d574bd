"""``maildispatch bounce-server`` as a real process, over real SMTP, with a private broker.

Only the bounce domain is accepted, the size cap holds, a 250 means the raw message is on
``mail.bounces`` (byte for byte, body hidden from Flower), and while the broker is down the
server answers 451 and takes the message again once the broker is back, losing nothing. The
server has a certificate: it offers STARTTLS, and MTAs without TLS still get through.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.auth_smtpd import Pki, make_pki
from tests.support.bounces import deliver, forged_return_path, render
from tests.support.env import SECRET
from tests.support.queue import task_body
from tests.support.redis_server import RedisServer
from tests.support.services import background, free_port, port_open, wait_for
from worker.message.returnpath import return_path

DOMAIN = "bounces.operator.test"
MAX_BYTES = 64 * 1024
READ_MAX_BYTES = 128 * 1024
#: a feedback-loop address the operator put at a domain of its own, not the bounce domain
FBL = "complaints@fbl.operator.test"
MAX_PER_PEER = 3


class Server:
    def __init__(self, port: int, broker: RedisServer, log: Path, pki: Pki, pid: int) -> None:
        self.pid = pid
        self.port = port
        self.broker = broker
        self.log = log
        self.pki = pki

    def queued(self) -> list[dict[str, object]]:
        """The task messages on mail.bounces, oldest first."""
        client = redis.Redis.from_url(self.broker.url)
        try:
            return [json.loads(m) for m in reversed(client.lrange("mail.bounces", 0, -1))]
        finally:
            client.close()

    def clear(self) -> None:
        client = redis.Redis.from_url(self.broker.url)
        client.delete("mail.bounces")
        client.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("bounce-server")
    broker = RedisServer(tmp / "redis", appendonly=True).start()
    port = free_port()
    pki = make_pki(tmp / "pki")
    env = server_env() | {
        "MAILDISPATCH_BROKER_URL": broker.url,
        "MAILDISPATCH_BOUNCE_DOMAIN": DOMAIN,
        "MAILDISPATCH_BOUNCE_LISTEN": f"127.0.0.1:{port}",
        "MAILDISPATCH_BOUNCE_MAX_BYTES": str(MAX_BYTES),
        "MAILDISPATCH_BOUNCE_READ_MAX_BYTES": str(READ_MAX_BYTES),
        "MAILDISPATCH_BOUNCE_MAX_RECIPIENTS": "2",
        "MAILDISPATCH_BOUNCE_MAX_CONNECTIONS_PER_PEER": str(MAX_PER_PEER),
        "MAILDISPATCH_BOUNCE_PUBLISH_TIMEOUT": "2s",
        "MAILDISPATCH_BOUNCE_TLS_CERT": str(pki.cert_file),
        "MAILDISPATCH_BOUNCE_TLS_KEY": str(pki.key_file),
        "MAILDISPATCH_BOUNCE_FBL_ADDRESS": FBL,
    }
    log = tmp / "server.log"
    args = [sys.executable, "-m", "producers.cli", "bounce-server"]
    try:
        with background(args, env, log) as proc:
            wait_for(lambda: port_open("127.0.0.1", port), 30, what="bounce server listening")
            yield Server(port, broker, log, pki, proc.pid)
            proc.terminate()
            assert proc.wait(20) == 0, log.read_text()[-2000:]
    finally:
        broker.stop()


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    return env | {"MAILDISPATCH_SECRET_KEY": SECRET, "MAILDISPATCH_LOG_FORMAT": "json"}


@pytest.fixture
def srv(server: Server) -> Server:
    if server.broker.proc is None:
        server.broker.start()
    server.clear()
    return server


def dsn(recipient: str = "gone@example.org") -> tuple[bytes, str]:
    rp = return_path(uuid.uuid4(), SECRET, DOMAIN, recipient)
    return render("postfix-userunknown", RETURN_PATH=rp, RECIPIENT=recipient), rp


def payload(message: dict[str, object]) -> dict[str, object]:
    body = task_body(message)
    args = body[0]
    assert isinstance(args, list) and len(args) == 1
    wire: dict[str, object] = args[0]
    return wire


def test_accepted_report_is_on_the_queue_byte_for_byte_and_hidden_from_flower(
    srv: Server,
) -> None:
    raw, rp = dsn()
    stage, code, text = deliver(srv.port, raw, rp)
    assert (stage, code) == ("data", 250), text
    (message,) = srv.queued()
    headers = message["headers"]
    assert isinstance(headers, dict)
    assert headers["task"] == "maildispatch.bounces.ingest"
    assert headers["argsrepr"] == f"bounce source=smtp bytes={len(raw)} rcpts=1"
    assert "gone@example.org" not in json.dumps(headers) and rp not in json.dumps(headers)
    wire = payload(message)
    assert base64.b64decode(str(wire["raw"])) == raw
    assert wire["rcpt_tos"] == [rp] and wire["source"] == "smtp"
    # the server's own log does not show the message either
    wait_for(lambda: "bounce_received" in srv.log.read_text(), 10, what="log line")
    assert "gone@example.org" not in srv.log.read_text()


def test_recipients_outside_the_bounce_domain_are_refused(srv: Server) -> None:
    raw, _ = dsn()
    for rcpt in ("victim@example.org", f"b+x@sub.{DOMAIN}", f"someone@{DOMAIN}.evil.example"):
        stage, code, text = deliver(srv.port, raw, rcpt)
        assert (stage, code) == ("rcpt", 550), text
    assert srv.queued() == []


def test_only_genuine_return_paths_and_our_addresses_are_taken_at_rcpt(srv: Server) -> None:
    raw, rp = dsn()
    job = uuid.uuid4()
    for rcpt in (
        forged_return_path(DOMAIN),  # a well-formed token with a wrong MAC
        return_path(job, "another-key", DOMAIN, "x@example.org"),  # signed with another key
        f"postmaster@{DOMAIN}",  # unsigned local parts
        f"b+{'a' * 52}@{DOMAIN}",
        f"b+@{DOMAIN}",
    ):
        stage, code, text = deliver(srv.port, raw, rcpt)
        assert (stage, code) == ("rcpt", 550), (rcpt, text)
    assert srv.queued() == []  # refused before any data was read
    # a genuine return path (any case), old-format (job-only) ones too, the FBL address (at
    # whatever domain the operator put it) and List-Unsubscribe's mailto address (its token is
    # in the Subject: checked by ingest)
    legacy = return_path(job, SECRET, DOMAIN)
    for rcpt in (rp.upper(), legacy, FBL.upper(), f"u@{DOMAIN}"):
        assert deliver(srv.port, raw, rcpt)[:2] == ("data", 250), rcpt
    assert len(srv.queued()) == 4


def test_a_verified_domains_return_path_is_taken_when_genuine(srv: Server) -> None:
    # MSC mail from a verified sending domain bounces to b+<token>@bounces.<domain>, a CNAME
    # to the bounce domain (worker/domains/): the token's MAC decides, as at the bounce domain
    raw, _ = dsn()
    job = uuid.uuid4()
    theirs = "bounces.customer.example"
    genuine = return_path(job, SECRET, theirs, "x@example.org")
    assert deliver(srv.port, raw, genuine)[:2] == ("data", 250)
    for rcpt in (
        forged_return_path(theirs),
        return_path(job, SECRET, "mail.customer.example", "x@example.org"),  # not the label
        f"postmaster@{theirs}",
    ):
        stage, code, text = deliver(srv.port, raw, rcpt)
        assert (stage, code) == ("rcpt", 550), (rcpt, text)
    assert len(srv.queued()) == 1


def test_recipients_per_transaction_are_capped(srv: Server) -> None:
    raw, _ = dsn()
    rcpts = [return_path(uuid.uuid4(), SECRET, DOMAIN, f"r{i}@example.org") for i in range(3)]
    stage, code, _ = deliver(srv.port, raw, *rcpts)  # MAX_RECIPIENTS = 2 for this server
    assert (stage, code) == ("rcpt", 452)


def test_connections_per_peer_are_capped_and_freed(srv: Server) -> None:
    import socket

    held = []
    try:
        for _ in range(MAX_PER_PEER):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            assert sock.recv(512).startswith(b"220")
            held.append(sock)
        extra = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        assert extra.recv(512).startswith(b"421")
        extra.close()
    finally:
        for sock in held:
            sock.close()
    raw, rp = dsn()
    wait_for(lambda: deliver(srv.port, raw, rp)[1] == 250, 10, what="slots given back")


def test_connections_in_total_are_capped_across_peers(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    """MAILDISPATCH_BOUNCE_MAX_CONNECTIONS holds across peer addresses (127.0.0.x are distinct
    peers on loopback), each of which stays within its own cap: the one beyond gets 421."""
    import socket

    port = free_port()
    env = server_env() | {
        "MAILDISPATCH_BROKER_URL": redis_url,
        "MAILDISPATCH_BOUNCE_DOMAIN": DOMAIN,
        "MAILDISPATCH_BOUNCE_LISTEN": f"127.0.0.1:{port}",
        "MAILDISPATCH_BOUNCE_MAX_CONNECTIONS": "4",
        "MAILDISPATCH_BOUNCE_MAX_CONNECTIONS_PER_PEER": "2",
        "MAILDISPATCH_BOUNCE_PUBLISH_TIMEOUT": "2s",
    }
    log = tmp_path / "server.log"
    args = [sys.executable, "-m", "producers.cli", "bounce-server"]

    def connect(source: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        return sock

    with background(args, env, log):
        wait_for(lambda: port_open("127.0.0.1", port), 30, what="bounce server listening")
        held = []
        try:
            for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"):
                sock = connect(source)
                assert sock.recv(512).startswith(b"220")
                held.append(sock)
            for source in ("127.0.0.4", "127.0.0.5"):  # new peers, under their own cap
                extra = connect(source)
                assert extra.recv(512).startswith(b"421 4.7.0")
                extra.close()
            held.pop().close()  # one slot given back: a new peer gets in
            wait_for(lambda: _greeting(connect("127.0.0.4")).startswith(b"220"), 10)
        finally:
            for sock in held:
                sock.close()
        refused = [json.loads(x) for x in log.read_text().splitlines() if "connection_refused" in x]
        assert {r["peer"] for r in refused} >= {"127.0.0.4", "127.0.0.5"}
        assert all(r["open"] == 4 for r in refused)
        # every slot is back once the clients left: a report is taken again
        raw, rp = dsn()
        wait_for(lambda: deliver(port, raw, rp)[1] == 250, 10, what="slots given back")


def _greeting(sock: object) -> bytes:
    import socket

    assert isinstance(sock, socket.socket)
    try:
        return sock.recv(512)
    finally:
        sock.close()


def test_a_big_report_is_queued_with_its_original_cut(srv: Server) -> None:
    raw, rp = dsn()
    big = raw + (b"X" * 76 + b"\r\n") * (MAX_BYTES // 78 + 10)
    assert len(big) > MAX_BYTES
    stage, code, _ = deliver(srv.port, big, rp)
    assert (stage, code) == ("data", 250)
    (message,) = srv.queued()
    queued = base64.b64decode(str(payload(message)["raw"]))
    assert len(queued) <= MAX_BYTES and queued.startswith(b"X-Maildispatch-Truncated:")
    assert raw.split(b"\r\n\r\n", 1)[0] in queued  # the report itself is whole


def test_oversize_is_refused_with_552(srv: Server) -> None:
    raw, rp = dsn()
    big = raw.replace(b"Hello!", b"") + (b"X" * 76 + b"\r\n") * (READ_MAX_BYTES // 78 + 10)
    stage, code, _ = deliver(srv.port, big, rp)  # announced with SIZE=: refused at MAIL
    assert (stage, code) == ("mail", 552)
    stage, code, _ = deliver(srv.port, big, rp, declare_size=False)  # not announced: at DATA
    assert (stage, code) == ("data", 552)
    assert srv.queued() == []


def test_a_line_without_end_is_cut_off_not_kept(srv: Server) -> None:
    # aiosmtpd keeps a line's pieces until its line feed, past the size limit too: one client
    # sending DATA and then bytes without a line feed grew the server's memory without bound
    def rss_mib() -> float:
        status = Path(f"/proc/{srv.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1]) / 1024

    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        reader = sock.makefile("rb")

        def say(line: bytes, code: bytes) -> None:
            sock.sendall(line + b"\r\n")
            reply = reader.readline()
            while reply[3:4] == b"-":
                reply = reader.readline()
            assert reply.startswith(code), (line, reply)

        assert reader.readline().startswith(b"220")
        say(b"EHLO mx.remote.example", b"250")
        say(b"MAIL FROM:<>", b"250")
        say(f"RCPT TO:<{FBL}>".encode(), b"250")  # taken without a token
        say(b"DATA", b"354")
        before = rss_mib()
        sent = 0
        with contextlib.suppress(OSError):  # the server hangs up part way
            while sent < 64 * 2**20:
                sock.sendall(b"X" * 2**20)
                sent += 2**20
        closing = reader.readline()
    assert closing.startswith(b"552"), closing
    assert sent < 64 * 2**20 or rss_mib() - before < 16, (sent, rss_mib() - before)
    assert rss_mib() - before < 16
    assert srv.queued() == []


def test_broker_down_answers_451_and_nothing_is_lost(srv: Server) -> None:
    before, rp1 = dsn("first@example.org")
    assert deliver(srv.port, before, rp1)[1] == 250
    srv.broker.stop()
    during, rp2 = dsn("second@example.org")
    for _ in range(2):  # the sending MTA retries; every attempt is deferred, none accepted
        stage, code, text = deliver(srv.port, during, rp2)
        assert (stage, code) == ("data", 451), text
    srv.broker.start()  # same port, same append-only file
    stage, code, _ = deliver(srv.port, during, rp2)  # the MTA's next retry
    assert (stage, code) == ("data", 250)
    raws = [base64.b64decode(str(payload(m)["raw"])) for m in srv.queued()]
    assert raws == [before, during]
    assert "bounce_enqueue_failed" in srv.log.read_text()


def test_starttls_is_offered_not_required(srv: Server) -> None:
    encrypted, rp1 = dsn("private@example.org")
    stage, code, text = deliver(srv.port, encrypted, rp1, tls_ca=srv.pki.ca_file)  # cert checked
    assert (stage, code) == ("data", 250), text
    clear, rp2 = dsn("old-mta@example.org")  # an MTA without TLS still gets through
    assert deliver(srv.port, clear, rp2)[:2] == ("data", 250)
    assert [base64.b64decode(str(payload(m)["raw"])) for m in srv.queued()] == [encrypted, clear]

    def received() -> list[bool]:
        lines = [json.loads(line) for line in srv.log.read_text().splitlines() if "{" in line]
        return [e["tls"] for e in lines if e.get("event") == "bounce_received"]

    wait_for(lambda: received()[-2:] == [True, False], 10, what="both bounces logged")


@pytest.mark.parametrize("which", ["only the certificate", "an unreadable key"])
def test_a_half_or_broken_tls_setting_stops_the_server_with_a_clear_error(
    srv: Server, tmp_path: Path, which: str
) -> None:
    env = server_env() | {
        "MAILDISPATCH_BROKER_URL": srv.broker.url,
        "MAILDISPATCH_BOUNCE_LISTEN": f"127.0.0.1:{free_port()}",
        "MAILDISPATCH_BOUNCE_TLS_CERT": str(srv.pki.cert_file),
    }
    if which == "an unreadable key":
        env["MAILDISPATCH_BOUNCE_TLS_KEY"] = str(tmp_path / "missing.key")
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "bounce-server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 78, done.stderr[-2000:]
    expected = "go together" if which == "only the certificate" else "missing.key"
    assert "configuration error" in done.stderr and expected in done.stderr
