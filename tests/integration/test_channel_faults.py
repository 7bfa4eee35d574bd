"""Channel errors classified as users need them, and pools that leak nothing, against real local
servers: a 552 "too many recipients", a token endpoint's 502, a send cancelled while its idle
connection is checked, recipients that give up in a transaction others accepted, STARTTLS."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpdEnvelope

from config.settings import Settings
from producers.job import parse_job
from tests.support.env import SECRET
from tests.support.relay import RecordingHandler, Relay
from tests.support.services import free_port
from worker.accounts.connected import GmailAccount
from worker.channels import smtppool
from worker.channels.base import Envelope
from worker.channels.gmail import GmailChannel
from worker.channels.smtppool import SmtpPool, SmtpServer
from worker.errors import DeliveryError, PermanentError, TransientError
from worker.message.build import build_message

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nHello\r\n"


# -- 552 "too many recipients" at RCPT (RFC 5321 4.5.3.1.10) -----------------------------------
class LimitHandler(RecordingHandler):
    """Accepts at most ``limit`` recipients per transaction, then answers as RFC 821 servers do."""

    def __init__(self, limit: int, reply: str) -> None:
        super().__init__()
        self.limit, self.reply = limit, reply

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpdEnvelope,
        address: str,
        options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.limit:
            return self.reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"


def test_552_too_many_recipients_is_not_a_permanent_refusal() -> None:
    """RFC 5321 4.5.3.1.10: a 552 for "too many recipients" is to be treated as temporary;
    the recipients past the server's limit were never refused, they must be sent again."""
    handler = LimitHandler(2, "552 5.5.3 Too many recipients")
    relay = Relay(free_port(), handler).start()
    try:

        async def main() -> object:
            pool = SmtpPool(SmtpServer("127.0.0.1", relay.port, timeout=10), size=1)
            try:
                return await pool.send(
                    Envelope("b@b.example", ("a@example.org", "b@example.org", "c@example.org")),
                    MESSAGE,
                )
            finally:
                await pool.close()

        receipt = asyncio.run(main())
    finally:
        relay.stop()
    assert [m.rcpt_tos for m in handler.messages] == [["a@example.org", "b@example.org"]]
    error = receipt.refused["c@example.org"]  # type: ignore[attr-defined]
    assert isinstance(error, TransientError), (type(error).__name__, error.describe())


# -- the OAuth token endpoint failing with a 502 ------------------------------------------------
class _BadGateway(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def bad_gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BadGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_token_endpoint_502_is_transient_not_a_revoked_account(bad_gateway: str) -> None:
    """A 502 from Google's token endpoint is the provider's outage, not the user's grant."""
    account = GmailAccount("o1", "ann@gmail.com", "cid", "csecret", "1//refresh-token")
    settings = Settings(
        secret_key=SECRET, gmail_api_url=bad_gateway, google_token_uri=bad_gateway + "/token"
    )
    job = parse_job(
        {
            "owner": "o1",
            "channel": "gmail",
            "identity": "Ann <ann@acme.example>",
            "to": ["bob@example.org"],
            "subject": "s",
            "text": "t\n",
        }
    )

    async def run() -> DeliveryError | object:
        channel = GmailChannel(settings)
        options = channel.message_options(job, account)
        message = build_message(job, domain=options.domain, from_address=options.from_address)
        try:
            return await channel.deliver(
                message, Envelope(options.mail_from, tuple(job.recipients)), account
            )
        except DeliveryError as exc:
            return exc
        finally:
            await channel.close()

    error = asyncio.run(asyncio.wait_for(run(), 60))
    assert isinstance(error, TransientError), (
        type(error).__name__,
        getattr(error, "kind", None),
        str(error),
    )


# -- a send cancelled while the pool checks an idle connection --------------------------------
class SlowNoop(RecordingHandler):
    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: SmtpdEnvelope, arg: str
    ) -> str:
        await asyncio.sleep(3)
        return "250 OK"


def test_cancelled_during_idle_check_does_not_leak_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(smtppool, "IDLE_CHECK_AFTER", 0.0)  # every reuse NOOPs first
    relay = Relay(free_port(), SlowNoop()).start()
    try:

        async def main() -> tuple[bool, int]:
            pool = SmtpPool(SmtpServer("127.0.0.1", relay.port, timeout=10), size=1)
            env = Envelope("b@b.example", ("a@example.org",))
            await pool.send(env, MESSAGE)  # leaves one idle connection
            ((conn, _),) = pool._idle
            task = asyncio.create_task(pool.send(env, MESSAGE))
            await asyncio.sleep(0.5)  # the NOOP is waiting for its reply
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.1)
            leaked = conn.is_connected and all(c is not conn for c, _ in pool._idle)
            await pool.close()
            return leaked, len(pool._idle)

        leaked, _ = asyncio.run(main())
    finally:
        relay.stop()
    assert not leaked, "the connection taken for its NOOP is open and in no one's hands"


# -- partial acceptance whose deferred recipients give up at once -------------------------------
def test_partial_acceptance_then_give_up_still_reports_the_accepted_recipient(
    session_relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """ok@ is accepted; defer1-@ gets 451 and the retry policy gives up at once (the first
    delay is past the give-up time). ok@ got the message: the job must say so."""
    from tests.support.events import all_events
    from tests.support.fleet import running_fleet
    from tests.support.services import wait_for

    session_relay.handler.reset()
    env = {"MAILDISPATCH_MSC_RETRY_DELAYS": "5s", "MAILDISPATCH_MSC_GIVE_UP_AFTER": "1s"}
    with running_fleet(
        tmp_path_factory.mktemp("partial-give-up"), relay_url=session_relay.url, env=env
    ) as fleet:
        d = fleet.dispatcher
        (job_id,) = d.send_many(
            [
                {
                    "owner": "acme",
                    "identity": "Acme <support@acme.example>",
                    "to": ["ok-partial@example.org"],
                    "cc": ["defer1-partial@example.org"],
                    "subject": "partial",
                    "text": "Body\n",
                }
            ]
        )
        status: dict[str, str] = {}

        def final() -> bool:
            nonlocal status
            status = d.status(job_id) or {}
            return status.get("state") in {"sent", "failed"}

        wait_for(final, 30, 0.1, "the job to finish")
        delivered = [m.rcpt_tos for m in session_relay.handler.messages]
        types = [
            (e["type"], e["data"].get("recipients"))
            for e in all_events(fleet.redis)
            if e["data"]["job_id"] == str(job_id)
        ]
    assert delivered == [["ok-partial@example.org"]]  # the relay has it
    assert ("message.sent", ["ok-partial@example.org"]) in types, (status, types)
    assert status["state"] == "sent", status


def test_starttls_required_but_not_offered_never_falls_back_to_plaintext() -> None:
    handler = RecordingHandler()
    relay = Relay(free_port(), handler).start()  # offers no STARTTLS
    try:

        async def main() -> object:
            pool = SmtpPool(
                SmtpServer("127.0.0.1", relay.port, "starttls", "user", "pw", timeout=5), size=1
            )
            try:
                return await pool.send(Envelope("b@b.example", ("a@example.org",)), MESSAGE)
            except DeliveryError as exc:
                return exc
            finally:
                await pool.close()

        outcome = asyncio.run(main())
    finally:
        relay.stop()
    assert isinstance(outcome, PermanentError) and outcome.kind == "config", outcome
    assert handler.messages == []
