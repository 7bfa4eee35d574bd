"""worker/channels/smtppool.py's lean transaction against a real aiosmtpd server.

It replaces ``SMTP.sendmail``: the same replies must give the same receipts and errors, and a
server that stops answering must time out and lose its connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.support.relay import Relay
from tests.support.services import free_port
from worker.channels.base import Envelope
from worker.channels.smtppool import SmtpPool, SmtpServer
from worker.errors import PermanentError, TransientError

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nHello\r\n"


@pytest.fixture
def smtpd() -> Iterator[Relay]:
    relay = Relay(free_port(), enable_SMTPUTF8=True).start()  # aiosmtpd's default, said aloud
    yield relay
    relay.stop()


def send(relay: Relay, *rcpts: str, timeout: float = 10.0) -> object:
    async def main() -> object:
        pool = SmtpPool(SmtpServer("127.0.0.1", relay.port, timeout=timeout), size=2)
        try:
            return await pool.send(Envelope("bounce@b.example", rcpts), MESSAGE)
        finally:
            await pool.close()

    return asyncio.run(main())


def test_accepted_with_some_recipients_refused(smtpd: Relay) -> None:
    receipt = send(smtpd, "ok@example.org", "reject-1@example.org", "defer1-x@example.org")
    assert receipt.reply_code == 250  # type: ignore[attr-defined]
    refused = receipt.refused  # type: ignore[attr-defined]
    assert set(refused) == {"reject-1@example.org", "defer1-x@example.org"}
    assert isinstance(refused["reject-1@example.org"], PermanentError)
    assert refused["reject-1@example.org"].command == "RCPT"
    assert isinstance(refused["defer1-x@example.org"], TransientError)
    assert [m.rcpt_tos for m in smtpd.handler.messages] == [["ok@example.org"]]


def test_all_refused_resets_and_keeps_the_connection_usable(smtpd: Relay) -> None:
    async def main() -> tuple[object, object]:
        pool = SmtpPool(SmtpServer("127.0.0.1", smtpd.port), size=1)
        try:
            refused = await pool.send(Envelope("b@b.example", ("reject-2@example.org",)), MESSAGE)
            accepted = await pool.send(Envelope("b@b.example", ("fine@example.org",)), MESSAGE)
            return refused, accepted
        finally:
            await pool.close()

    refused, accepted = asyncio.run(main())
    assert refused.reply_code is None and list(refused.refused) == ["reject-2@example.org"]  # type: ignore[attr-defined]
    assert accepted.reply_code == 250  # type: ignore[attr-defined]
    assert len(smtpd.handler.messages) == 1


def test_internationalized_address_uses_smtputf8(smtpd: Relay) -> None:
    receipt = send(smtpd, "zoë@example.org")
    assert receipt.reply_code == 250  # type: ignore[attr-defined]
    assert smtpd.handler.messages[0].rcpt_tos == ["zoë@example.org"]


def test_a_server_without_smtputf8_refuses_an_internationalized_address() -> None:
    relay = Relay(free_port(), enable_SMTPUTF8=False).start()
    try:
        with pytest.raises(PermanentError) as caught:
            send(relay, "zoë@example.org")
        assert caught.value.kind == "config"
    finally:
        relay.stop()


def test_a_server_that_stops_answering_times_out(smtpd: Relay) -> None:
    smtpd.handler.delay = 3.0  # before the reply to the end of DATA
    started = time.monotonic()
    with pytest.raises(TransientError, match="timed out"):
        send(smtpd, "slow@example.org", timeout=0.4)
    # MAIL, RCPT and DATA answer at once; a silent server is given up within two timeouts
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(
    ("sent", "arrived"),
    [
        # lines starting with a dot are stuffed on the wire and arrive as written
        (b"Subject: d\r\n\r\n.\r\n..two\r\n.end", b"Subject: d\r\n\r\n.\r\n..two\r\n.end\r\n"),
        (b".starts with a dot\r\n", b".starts with a dot\r\n"),
        # bare LF and bare CR become CRLF, as SMTP requires (no bare-LF smuggling)
        (b"Subject: lf\n\nline\nx\r.\ry\r\n", b"Subject: lf\r\n\r\nline\r\nx\r\n.\r\ny\r\n"),
    ],
)
def test_data_is_transparent(smtpd: Relay, sent: bytes, arrived: bytes) -> None:
    async def main() -> object:
        pool = SmtpPool(SmtpServer("127.0.0.1", smtpd.port), size=1)
        try:
            return await pool.send(Envelope("b@b.example", ("fine@example.org",)), sent)
        finally:
            await pool.close()

    assert asyncio.run(main()).reply_code == 250  # type: ignore[attr-defined]
    assert [m.data for m in smtpd.handler.messages] == [arrived]
