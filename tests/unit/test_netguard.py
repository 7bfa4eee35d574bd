"""The network guard of user SMTP servers, and the texts shown from what a server said.

Property tests (hypothesis): every address of every blocked network is refused in every form an
IPv6 address can carry it in; addresses outside them are permitted; exceptions carve out only
what they name. The connect path is run for real on loopback: a refused address is never
connected to, a permitted one is, at the address that was checked.
"""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address, IPv6Address, ip_network

import aiosmtplib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import DEFAULT_SMTP_BLOCKED_NETWORKS, Settings
from worker.channels.netguard import BLOCKED_TEXT, NetworkPolicy
from worker.channels.smtperrors import translate
from worker.channels.smtptext import MAX_TEXT, NOT_SMTP, printable
from worker.errors import PermanentError, TransientError

DEFAULT = NetworkPolicy.from_settings(Settings(secret_key="k" * 32))
NETWORKS = [ip_network(n) for n in DEFAULT_SMTP_BLOCKED_NETWORKS]
#: public ranges (documentation and well-known public space) that must stay reachable
PUBLIC_V4 = [ip_network(n) for n in ("8.8.8.0/24", "93.184.0.0/16", "203.0.113.0/24", "1.0.0.0/8")]


def _in(net: object) -> st.SearchStrategy[IPv4Address | IPv6Address]:
    first, size = int(net.network_address), net.num_addresses  # type: ignore[attr-defined]
    cls = IPv4Address if net.version == 4 else IPv6Address  # type: ignore[attr-defined]
    return st.integers(0, size - 1).map(lambda i: cls(first + i))


blocked_address = st.sampled_from(NETWORKS).flatmap(_in)
blocked_v4 = st.sampled_from([n for n in NETWORKS if n.version == 4]).flatmap(_in)
public_v4 = st.sampled_from(PUBLIC_V4).flatmap(_in)


def v6_forms(v4: IPv4Address) -> list[IPv6Address]:
    """IPv4-mapped, IPv4-compatible, NAT64 and 6to4 addresses that carry ``v4``."""
    n = int(v4)
    return [
        IPv6Address((0xFFFF << 32) | n),
        IPv6Address(n),
        IPv6Address((0x0064FF9B << 96) | n),
        IPv6Address((0x2002 << 112) | (n << 80) | 1),
    ]


@given(blocked_address)
def test_every_blocked_address_is_refused(address: IPv4Address | IPv6Address) -> None:
    assert not DEFAULT.permits(address)
    assert not DEFAULT.permits(str(address))


@given(blocked_v4)
def test_ipv6_forms_of_a_blocked_ipv4_address_are_refused(address: IPv4Address) -> None:
    for form in v6_forms(address):
        assert not DEFAULT.permits(form), form


@given(public_v4)
def test_public_addresses_and_their_mapped_forms_are_permitted(address: IPv4Address) -> None:
    assert DEFAULT.permits(address)
    assert DEFAULT.permits(v6_forms(address)[0])  # ::ffff:a.b.c.d, as a dual-stack socket sees it


@given(st.integers(1, 2**32 - 1))
def test_an_exception_permits_only_what_it_names(low: int) -> None:
    policy = NetworkPolicy.from_settings(
        Settings(secret_key="k" * 32, smtp_allowed_networks="10.1.0.0/16")
    )
    inside = IPv4Address((10 << 24) | (1 << 16) | (low & 0xFFFF))
    outside = IPv4Address((10 << 24) | (2 << 16) | (low & 0xFFFF))
    assert policy.permits(inside) and policy.permits(v6_forms(inside)[0])
    assert not policy.permits(outside) and not policy.permits(v6_forms(outside)[0])


def test_scoped_link_local_and_literal_hosts() -> None:
    assert not DEFAULT.permits("fe80::1%lo")
    for host in ("localhost", "LOCALHOST.", "db.localhost", "[::1]", "::ffff:10.0.0.1", "0.0.0.0"):
        with pytest.raises(PermanentError):
            DEFAULT.check_literal(host)
    DEFAULT.check_literal("smtp.example.net")  # names are checked when connecting
    DEFAULT.check_literal("8.8.8.8")


def test_settings_refuse_what_is_not_a_network() -> None:
    with pytest.raises(ValueError, match="not a network"):
        Settings(secret_key="k" * 32, smtp_blocked_networks="10.0.0.0/8,intranet")
    assert Settings(secret_key="k" * 32, smtp_blocked_networks="").smtp_blocked_networks == ()


def test_a_blocked_host_name_is_never_connected_to() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]

    async def run() -> None:
        with pytest.raises(PermanentError) as info:
            await DEFAULT.connect("localhost", port, 5)
        assert info.value.kind == "config" and info.value.text == BLOCKED_TEXT
        allowed = NetworkPolicy.of(DEFAULT_SMTP_BLOCKED_NETWORKS, ["127.0.0.1/32"])
        sock = await allowed.connect("localhost", port, 5)
        assert sock.getpeername() == ("127.0.0.1", port)  # the address that was checked
        sock.close()
        with pytest.raises(TransientError, match="resolve"):
            await allowed.connect("no-such-host.invalid", port, 5)

    try:
        asyncio.run(run())
        accepted = listener.accept()  # exactly one: the allowed connection
        accepted[0].close()
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


@settings(max_examples=300)
@given(st.text(max_size=2000))
def test_server_text_is_bounded_printable_ascii(text: str) -> None:
    shown = printable(text)
    assert len(shown) <= MAX_TEXT and shown == shown.strip() and "  " not in shown
    assert all(" " <= c <= "~" for c in shown)
    for error in (
        translate(aiosmtplib.SMTPResponseException(550, text)),
        translate(aiosmtplib.SMTPAuthenticationError(535, text)),
        translate(aiosmtplib.SMTPConnectResponseError(554, text)),
    ):
        assert error.text.isascii() and error.text.isprintable()
        assert len(error.describe()) <= MAX_TEXT + 40


@given(st.binary(min_size=1, max_size=200))
def test_a_reply_that_is_no_smtp_reply_is_never_quoted(line: bytes) -> None:
    message = f"Malformed SMTP response line: {line.decode('utf-8', 'ignore')}"
    error = translate(aiosmtplib.SMTPResponseException(-1, message))
    assert isinstance(error, PermanentError) and error.text == NOT_SMTP
    assert translate(aiosmtplib.SMTPConnectResponseError(250, message)).text == NOT_SMTP


def test_an_smtp_reply_keeps_its_codes() -> None:
    error = translate(aiosmtplib.SMTPResponseException(451, "4.7.1 try\x00 again \x1b[31m later"))
    assert isinstance(error, TransientError)
    assert (error.reply_code, error.enhanced_status) == (451, "4.7.1")
    assert error.text == "4.7.1 try again [31m later"
