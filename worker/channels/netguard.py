"""Where a user's SMTP server may be: the resolved address is checked on every connection.

A custom SMTP server is the user's input, so without this a user could make the worker connect
anywhere it can reach: its own loopback services, the private network behind it, a cloud
metadata service, and learn from the error texts what answered (a port scanner with banners).
The operator lists the networks such servers may not be in (``MAILDISPATCH_SMTP_BLOCKED_NETWORKS``,
default: loopback, RFC 1918, carrier-grade NAT, link-local, unique-local, "this network") and
exceptions to them (``MAILDISPATCH_SMTP_ALLOWED_NETWORKS``).

The check is made on the addresses the host name resolves to *when connecting*, and the socket
is connected to the very address that was checked, so a name that resolved to a public address
when the account was set and to 127.0.0.1 now (DNS rebinding) is refused, and there is no
second lookup between check and connect. An IPv6 address that carries an IPv4 one
(IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible, NAT64 ``64:ff9b::/96``, 6to4, Teredo) is
checked as that IPv4 address too.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address, ip_network
from typing import TYPE_CHECKING

import structlog

from worker.errors import PermanentError, TransientError
from worker.failures.kinds import FailedKind

if TYPE_CHECKING:
    from ipaddress import IPv4Network

    from config.settings import Settings

log = structlog.get_logger("maildispatch.channels.netguard")

_NAT64 = IPv6Network("64:ff9b::/96")
_COMPATIBLE = IPv6Network("::/96")

BLOCKED_TEXT = (
    "the SMTP server's address is in a network this deployment does not allow user SMTP servers "
    "in (an internal or local address); use the server's public host name"
)


def embedded_forms(address: IPv4Address | IPv6Address) -> Iterator[IPv4Address | IPv6Address]:
    """The address, and every IPv4 address carried inside an IPv6 one."""
    yield address
    if isinstance(address, IPv4Address):
        return
    if address.ipv4_mapped is not None:
        yield address.ipv4_mapped
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        yield IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        yield address.sixtofour
    if address.teredo is not None:
        yield address.teredo[1]  # the client's address (the server is a public relay)


@dataclass(frozen=True)
class NetworkPolicy:
    """Blocked networks, and exceptions to them, for the addresses of user SMTP servers."""

    blocked: tuple[IPv4Network | IPv6Network, ...]
    allowed: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def of(cls, blocked: Sequence[str], allowed: Sequence[str] = ()) -> NetworkPolicy:
        """From network texts (``10.0.0.0/8``, ``::1``)."""
        return cls(
            tuple(ip_network(n, strict=False) for n in blocked),
            tuple(ip_network(n, strict=False) for n in allowed),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> NetworkPolicy:
        """``MAILDISPATCH_SMTP_BLOCKED_NETWORKS`` less ``MAILDISPATCH_SMTP_ALLOWED_NETWORKS``."""
        return cls.of(settings.smtp_blocked_networks, settings.smtp_allowed_networks)

    def permits(self, address: str | IPv4Address | IPv6Address) -> bool:
        """May a user's server be at this address (in none of its forms blocked, or allowed)?"""
        addr = ip_address(address) if isinstance(address, str) else address
        if isinstance(addr, IPv6Address) and addr.scope_id:
            addr = IPv6Address(str(addr).split("%", 1)[0])
        return not any(
            any(form in net for net in self.blocked if net.version == form.version)
            and not any(form in net for net in self.allowed if net.version == form.version)
            for form in embedded_forms(addr)
        )

    def check_literal(self, host: str) -> None:
        """Refuse a host that is written as a blocked address, or a ``localhost`` name.

        For input checks (an account being set): names are resolved, and checked, only when
        connecting.
        """
        name = host.strip().strip("[]").rstrip(".").lower()
        if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always loopback
            name = "127.0.0.1"
        try:
            addr = ip_address(name)
        except ValueError:
            return
        if not self.permits(addr):
            raise PermanentError(BLOCKED_TEXT, kind=FailedKind.CONFIG)

    async def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """A TCP socket connected to a permitted address of ``host``.

        PermanentError (kind ``config``) when every address is blocked; TransientError when
        the name does not resolve now; ``OSError`` / ``TimeoutError`` from the connection
        itself (the pool translates those).
        """
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(
                    host.strip("[]"), port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                ),
                timeout,
            )
        except (socket.gaierror, UnicodeError) as exc:
            raise TransientError(f"cannot resolve the SMTP server's host name: {exc}") from None
        permitted = [info for info in infos if self.permits(str(info[4][0]))]
        if not permitted:
            log.warning(
                "smtp_destination_blocked",
                host=host,
                port=port,
                addresses=sorted({str(info[4][0]) for info in infos}),
            )
            raise PermanentError(BLOCKED_TEXT, kind=FailedKind.CONFIG)
        error: BaseException = OSError(f"no address of {host} could be connected to")
        for family, kind, proto, _, sockaddr in permitted:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, sockaddr), timeout)
            except (OSError, TimeoutError) as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise error
