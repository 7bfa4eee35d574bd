"""worker/channels/smtppool.py's lean transaction against a real aiosmtpd server.

It replaces ``SMTP.sendmail``: the same replies must give the same receipts and errors, and a
server that stops answering must time out and lose its connection. The tests that take ``smtpd``
run twice: against aiosmtpd as it is (one command at a time) and against an aiosmtpd that offers
PIPELINING (tests/support/wire_relay.py), where MAIL, the RCPTs and DATA go in one write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.support.relay import Relay
from tests.support.services import free_port
from tests.support.wire_relay import WireRelay
from worker.channels.base import Envelope
from worker.channels.smtppool import SmtpPool, SmtpServer
from worker.errors import PermanentError, TransientError

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nHello\r\n"


@pytest.fixture(params=["one-by-one", "pipelining"])
def smtpd(request: pytest.FixtureRequest) -> Iterator[Relay]:
    """aiosmtpd as it is, and aiosmtpd offering PIPELINING."""
    if request.param == "pipelining":
        relay: Relay = WireRelay(free_port(), enable_SMTPUTF8=True).start()
    else:
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


# --- PIPELINING (RFC 2920) -------------------------------------------------------------------


@pytest.fixture
def wire() -> Iterator[WireRelay]:
    relay = WireRelay(free_port()).start()
    yield relay
    relay.stop()


def send_all(relay: Relay, *envelopes: Envelope) -> list[object]:
    """Send one message per envelope, in turn, through one pool of one connection."""

    async def main() -> list[object]:
        pool = SmtpPool(SmtpServer("127.0.0.1", relay.port, timeout=10.0), size=1)
        results: list[object] = []
        try:
            for envelope in envelopes:
                try:
                    results.append(await pool.send(envelope, MESSAGE))
                except (PermanentError, TransientError) as exc:
                    results.append(exc)
        finally:
            await pool.close()
        return results

    return asyncio.run(main())


def verbs(flight: bytes) -> list[bytes]:
    """The commands in one flight of client input: ``MAIL FROM``, ``RCPT TO``, ``DATA``..."""
    return [line.split(b":")[0].split(b" ")[0] for line in flight.splitlines()]


@pytest.mark.parametrize("coalesce", [True, False], ids=["replies-together", "replies-apart"])
def test_pipelined_envelope_goes_in_one_flight(coalesce: bool) -> None:
    relay = WireRelay(free_port(), coalesce=coalesce).start()
    try:
        rcpts = ("one@example.org", "two@example.org", "three@example.org")
        [receipt] = send_all(relay, Envelope("bounce@b.example", rcpts))
        assert receipt.reply_code == 250 and receipt.refused == {}  # type: ignore[attr-defined]
        assert [m.rcpt_tos for m in relay.handler.messages] == [list(rcpts)]
        flights = relay.handler.flights()
        # MAIL, the three RCPTs and DATA all reached the server before it wrote a reply to any
        # of them (each reply is logged before it is written); a client waiting for each
        # reply sends five flights here instead
        assert verbs(flights[1]) == [b"MAIL", b"RCPT", b"RCPT", b"RCPT", b"DATA"]
        assert flights[1].startswith(b"MAIL FROM:<bounce@b.example> size=")
        assert flights[2].endswith(b"\r\n.\r\n")  # the message, after the 354
        assert [verbs(f)[0] for f in (flights[0], flights[3])] == [b"EHLO", b"QUIT"]
        assert len(flights) == 4
    finally:
        relay.stop()


def test_pipelined_replies_arrive_together(wire: WireRelay) -> None:
    send_all(wire, Envelope("bounce@b.example", ("one@example.org", "two@example.org")))
    # the replies to MAIL, both RCPTs and DATA in one write: the client must find all four
    # in what one read from the socket gave it
    together = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 "
    assert any(w.startswith(together) for w in wire.handler.written())


def test_pipelined_one_recipient_of_three_refused(wire: WireRelay) -> None:
    rcpts = ("ok1@example.org", "reject-x@example.org", "ok2@example.org")
    [receipt] = send_all(wire, Envelope("bounce@b.example", rcpts))
    assert receipt.reply_code == 250  # type: ignore[attr-defined]
    refused = receipt.refused  # type: ignore[attr-defined]
    assert list(refused) == ["reject-x@example.org"]
    assert isinstance(refused["reject-x@example.org"], PermanentError)
    assert refused["reject-x@example.org"].reply_code == 550
    assert refused["reject-x@example.org"].command == "RCPT"
    assert [m.rcpt_tos for m in wire.handler.messages] == [["ok1@example.org", "ok2@example.org"]]
    assert verbs(wire.handler.flights()[1]) == [b"MAIL", b"RCPT", b"RCPT", b"RCPT", b"DATA"]


def test_pipelined_all_refused_keeps_the_connection(wire: WireRelay) -> None:
    refused, accepted = send_all(
        wire,
        Envelope("bounce@b.example", ("reject-1@example.org", "reject-2@example.org")),
        Envelope("bounce@b.example", ("fine@example.org",)),
    )
    assert refused.reply_code is None and refused.text == "all recipients refused"  # type: ignore[attr-defined]
    assert list(refused.refused) == ["reject-1@example.org", "reject-2@example.org"]  # type: ignore[attr-defined]
    assert accepted.reply_code == 250  # type: ignore[attr-defined]
    assert [m.rcpt_tos for m in wire.handler.messages] == [["fine@example.org"]]
    # one connection: the server refused DATA (503), the client read that and reset
    assert wire.handler.connections() == 1
    assert any(
        w.startswith(b"250 2.1.0 Ok\r\n550 5.1.1")
        and w.endswith(b"503 Error: need RCPT command\r\n")
        for w in wire.handler.written()
    )
    flights = wire.handler.flights()
    assert [verbs(f) for f in flights[1:3]] == [
        [b"MAIL", b"RCPT", b"RCPT", b"DATA"],
        [b"RSET"],
    ]
    assert verbs(flights[3]) == [b"MAIL", b"RCPT", b"DATA"]


def test_pipelined_sender_refused_keeps_the_connection(wire: WireRelay) -> None:
    rcpts = ("one@example.org", "two@example.org")
    refused, accepted = send_all(
        wire, Envelope("refuse-me@b.example", rcpts), Envelope("bounce@b.example", rcpts)
    )
    assert isinstance(refused, PermanentError)
    assert refused.reply_code == 550 and refused.command == "MAIL"
    assert accepted.reply_code == 250  # type: ignore[attr-defined]
    assert [m.mail_from for m in wire.handler.messages] == ["bounce@b.example"]
    assert wire.handler.connections() == 1
    # the RCPTs and DATA were answered 503 (no sender): all read, then RSET, then the next one
    flights = wire.handler.flights()
    assert [verbs(f) for f in flights[1:4]] == [
        [b"MAIL", b"RCPT", b"RCPT", b"DATA"],
        [b"RSET"],
        [b"MAIL", b"RCPT", b"RCPT", b"DATA"],
    ]


def test_pipelined_421_drops_the_connection(wire: WireRelay) -> None:
    closing, accepted = send_all(
        wire,
        Envelope("bounce@b.example", ("one@example.org", "bye-now@example.org")),
        Envelope("bounce@b.example", ("one@example.org",)),
    )
    assert isinstance(closing, TransientError) and closing.reply_code == 421
    assert accepted.reply_code == 250  # type: ignore[attr-defined]
    # the first connection was closed after the 421 without reading on or sending more
    assert wire.handler.connections() == 2
    assert wire.handler.wait_closed(0)
    assert len(wire.handler.flights(0)) == 2
    assert [m.rcpt_tos for m in wire.handler.messages] == [["one@example.org"]]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-by-one"])
@pytest.mark.parametrize("hang_up", ["421 4.4.2 Idle timeout", ""], ids=["421", "no-reply"])
def test_an_idle_connection_closed_at_mail_is_replaced_in_the_send(
    pipelining: bool, hang_up: str
) -> None:
    relay = WireRelay(free_port(), pipelining=pipelining).start()
    relay.handler.hang_up_at_mail, relay.handler.hang_up_with = 1, hang_up
    try:
        receipts = send_all(
            relay,
            Envelope("bounce@b.example", ("one@example.org",)),
            Envelope("bounce@b.example", ("two@example.org",)),
        )
        # the kept connection was gone when the second message came: nothing of it had been
        # sent, so it went on a new connection within the same send, not as an error to retry
        assert [r.reply_code for r in receipts] == [250, 250]  # type: ignore[attr-defined]
        assert [m.rcpt_tos for m in relay.handler.messages] == [
            ["one@example.org"],
            ["two@example.org"],
        ]
        assert relay.handler.connections() == 2
    finally:
        relay.stop()


@pytest.mark.parametrize("hang_up", ["421 4.3.2 Shutting down", ""], ids=["421", "no-reply"])
def test_a_new_connection_closed_at_mail_is_an_error_not_retried(hang_up: str) -> None:
    relay = WireRelay(free_port()).start()
    relay.handler.hang_up_at_mail, relay.handler.hang_up_with = 0, hang_up
    try:
        [error] = send_all(relay, Envelope("bounce@b.example", ("one@example.org",)))
        assert isinstance(error, TransientError)
        assert error.reply_code == (421 if hang_up else None)
        assert relay.handler.connections() == 1  # the attempt ends; the job's retry policy rules
        assert relay.handler.messages == []
    finally:
        relay.stop()


def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    relay = WireRelay(free_port(), pipelining=False).start()
    try:
        rcpts = ("one@example.org", "reject-x@example.org", "two@example.org")
        [receipt] = send_all(relay, Envelope("bounce@b.example", rcpts))
        assert receipt.reply_code == 250  # type: ignore[attr-defined]
        assert list(receipt.refused) == ["reject-x@example.org"]  # type: ignore[attr-defined]
        flights = relay.handler.flights()
        assert [verbs(f) for f in flights[:5]] == [
            [b"EHLO"],
            [b"MAIL"],
            [b"RCPT"],
            [b"RCPT"],
            [b"RCPT"],
        ]
        assert verbs(flights[5]) == [b"DATA"]
        assert len(flights) == 8  # the message, then QUIT
    finally:
        relay.stop()


@pytest.mark.parametrize("refusal", ["recipients", "sender"])
def test_a_server_that_takes_data_with_no_recipient_is_hung_up_on(
    wire: WireRelay, refusal: str
) -> None:
    wire.handler.data_anyway = True
    sender = "refuse-me@b.example" if refusal == "sender" else "bounce@b.example"
    first, accepted = send_all(
        wire,
        Envelope(sender, ("reject-1@example.org", "reject-2@example.org")),
        Envelope("bounce@b.example", ("fine@example.org",)),
    )
    if refusal == "sender":
        assert isinstance(first, PermanentError) and first.command == "MAIL"
    else:
        assert first.reply_code is None  # type: ignore[attr-defined]
        assert list(first.refused) == ["reject-1@example.org", "reject-2@example.org"]  # type: ignore[attr-defined]
    assert accepted.reply_code == 250  # type: ignore[attr-defined]
    # the server said 354; the client closed instead of sending anything it could take for a
    # message (not even "." alone), so nothing was delivered but the second message
    assert wire.handler.written(0)[-1].endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    assert wire.handler.wait_closed(0)
    assert [verbs(f) for f in wire.handler.flights(0)] == [
        [b"EHLO"],
        [b"MAIL", b"RCPT", b"RCPT", b"DATA"],
    ]
    assert [m.rcpt_tos for m in wire.handler.messages] == [["fine@example.org"]]
    assert wire.handler.connections() == 2


def test_pipelining_saves_round_trips_to_a_slow_server() -> None:
    """With 20 ms before every reply, a message to two recipients takes 2 round trips, not 5."""
    turns = {}
    for pipelining in (True, False):
        relay = WireRelay(free_port(), pipelining=pipelining).start()
        relay.handler.reply_delay = 0.02
        try:
            envelope = Envelope("bounce@b.example", ("one@example.org", "two@example.org"))
            [receipt] = send_all(relay, envelope)
            assert receipt.reply_code == 250  # type: ignore[attr-defined]
            flights = relay.handler.flights()
        finally:
            relay.stop()
        assert [verbs(f)[0] for f in (flights[0], flights[-1])] == [b"EHLO", b"QUIT"]
        turns[pipelining] = len(flights) - 2  # each client flight waits for one round trip
    assert turns == {True: 2, False: 5}
