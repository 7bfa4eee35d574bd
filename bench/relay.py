"""The bench relay: a minimal asyncio SMTP server in its own process that counts messages by job.

Usage: python bench/relay.py --port P --control-port C [--delay 0.02] [--impl fast|aiosmtpd]
       [--no-pipelining]

``fast`` (default) is a bare ``asyncio.Protocol`` speaking just enough SMTP (EHLO/HELO, MAIL,
RCPT, DATA, RSET, NOOP, QUIT) to accept anything, so that the relay costs as little CPU as
possible and the client side is what the bench measures; ``aiosmtpd`` is the same counting
behind aiosmtpd's server, for comparison with the relay the tests (and many outside checks) use.
With ``--delay`` every reply, the greeting included, leaves that many seconds after the command
that caused it: a network-like round trip, which only concurrency (and pipelining) can hide.
Both advertise PIPELINING (RFC 2920) unless ``--no-pipelining``: commands that arrive together
are handled in order and answered in order, each reply still ``--delay`` after its command.

Every accepted message is counted by its ``Message-ID`` (the job id for maildispatch), so a
message delivered twice shows as a duplicate and a lost one as a shortfall.

The control port speaks one-line commands and answers one JSON line:
``STATS`` (counts, first/last acceptance time), ``RESET``, ``WAIT <n> <timeout>`` (answers once
``n`` distinct messages arrived, or at the timeout) and ``QUIT`` (stops the relay).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import time
from collections import deque
from typing import Any

_MID = re.compile(rb"^Message-I[Dd]:[ \t]*(<[^>\r\n]*>)", re.M | re.I)


class Stats:
    """Messages accepted, counted by Message-ID."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything."""
        self.messages = 0
        self.bytes = 0
        self.ids: set[bytes] = set()
        self.duplicates = 0
        self.without_id = 0
        self.first = 0.0
        self.last = 0.0
        self.connections = 0
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    def record(self, data: bytes | bytearray) -> None:
        """Count one accepted message (called right before its 250 is written)."""
        now = time.time()
        self.messages += 1
        self.bytes += len(data)
        if not self.first:
            self.first = now
        self.last = now
        head_end = data.find(b"\r\n\r\n")
        match = _MID.search(data, 0, head_end if head_end >= 0 else len(data))
        if match is None:
            self.without_id += 1
        else:
            mid = match.group(1)
            if mid in self.ids:
                self.duplicates += 1
            else:
                self.ids.add(mid)
        if self.waiters:
            unique = len(self.ids)
            keep = []
            for n, fut in self.waiters:
                if unique >= n and not fut.done():
                    fut.set_result(None)
                elif not fut.done():
                    keep.append((n, fut))
            self.waiters = keep

    def as_dict(self) -> dict[str, Any]:
        """The counters as JSON."""
        return {
            "messages": self.messages,
            "unique": len(self.ids),
            "duplicates": self.duplicates,
            "without_id": self.without_id,
            "bytes": self.bytes,
            "first": self.first,
            "last": self.last,
            "connections": self.connections,
        }


class FastSmtp(asyncio.Protocol):
    """Just enough SMTP to accept everything, with as little work per message as possible."""

    def __init__(self, stats: Stats, delay: float, pipelining: bool = True) -> None:
        self.stats = stats
        self.delay = delay
        self.ehlo = b"250-bench-relay\r\n250-8BITMIME\r\n250-SIZE 104857600\r\n" + (
            b"250-PIPELINING\r\n250 SMTPUTF8\r\n" if pipelining else b"250 SMTPUTF8\r\n"
        )
        self.buf = bytearray()
        self.in_data = False
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        # delayed replies in order: (when it is due, the reply, or None to close the connection)
        self.due: deque[tuple[float, bytes | None]] = deque()

    def reply(self, line: bytes | None) -> None:
        """Write a reply (``None``: close) now, or ``delay`` seconds from now, in order.

        One timer per connection serves the queue: timers of equal deadlines may fire in any
        order, and the replies to pipelined commands must leave in the order of the commands.
        """
        assert self.transport is not None
        if not self.delay:
            self._write([line])
            return
        self.due.append((self.loop.time() + self.delay, line))
        if len(self.due) == 1:
            self.loop.call_at(self.due[0][0], self._flush)

    def _flush(self) -> None:
        # the first reply's timer fired; any others already due go in the same write
        lines = [self.due.popleft()[1]]
        now = self.loop.time()
        while self.due and self.due[0][0] <= now:
            lines.append(self.due.popleft()[1])
        self._write(lines)
        if self.due:
            self.loop.call_at(self.due[0][0], self._flush)

    def _write(self, lines: list[bytes | None]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        close = None in lines
        transport.write(b"".join(line for line in lines if line is not None))
        if close:
            transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.connections += 1
        self.reply(b"220 bench-relay ESMTP\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while True:
            if self.in_data:
                # the message ends at CRLF.CRLF; the CRLF before the dot belongs to the message
                end = buf.find(b"\r\n.\r\n", max(pos - 2, 0))
                if end < 0:
                    break
                self.stats.record(buf[pos : end + 2])
                pos = end + 5
                self.in_data = False
                self.reply(b"250 2.0.0 Ok: queued\r\n")
                continue
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            verb = bytes(buf[pos : pos + 4]).upper()
            pos = nl + 2
            if verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self.reply(b"250 2.1.0 Ok\r\n")
            elif verb == b"DATA":
                self.in_data = True
                self.reply(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb == b"EHLO":
                self.reply(self.ehlo)
            elif verb == b"HELO":
                self.reply(b"250 bench-relay\r\n")
            elif verb == b"QUIT":
                self.reply(b"221 2.0.0 Bye\r\n")
                self.reply(None)
                break  # nothing after QUIT is answered
            else:
                self.reply(b"502 5.5.2 Error: command not recognized\r\n")
        del buf[:pos]


async def _start_aiosmtpd(
    stats: Stats, host: str, port: int, pipelining: bool = True
) -> asyncio.Server:
    from aiosmtpd.smtp import SMTP

    class Counting:
        async def handle_EHLO(
            self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
        ) -> list[str]:
            # aiosmtpd reads pipelined commands line by line but does not say it can
            session.host_name = hostname  # what aiosmtpd does itself without this hook
            if pipelining:
                responses.insert(-1, "250-PIPELINING")
            return responses

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            stats.record(envelope.original_content or envelope.content)
            return "250 2.0.0 Ok: queued"

    handler = Counting()
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        stats.connections += 1
        return SMTP(handler, hostname="bench-relay", loop=loop)

    return await loop.create_server(factory, host, port, backlog=1024)


async def _control(
    stats: Stats, stop: asyncio.Event, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while line := await reader.readline():
            words = line.decode().split()
            if not words:
                continue
            cmd = words[0].upper()
            if cmd == "RESET":
                for _, fut in stats.waiters:
                    fut.cancel()
                stats.reset()
                answer: dict[str, Any] = {"ok": True}
            elif cmd == "WAIT":
                want = int(words[1])
                timeout = float(words[2]) if len(words) > 2 else 60.0
                if len(stats.ids) < want:
                    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    stats.waiters.append((want, fut))
                    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(fut, timeout)
                answer = stats.as_dict()
            elif cmd == "QUIT":
                stop.set()
                answer = {"ok": True}
            else:
                answer = stats.as_dict()
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(
    host: str, port: int, control_port: int, delay: float, impl: str, pipelining: bool = True
) -> None:
    """Run the relay and its control port until QUIT or a signal."""
    stats = Stats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if impl == "aiosmtpd":
        if delay:
            raise SystemExit("--delay is for the fast relay only (aiosmtpd delays DATA alone)")
        server = await _start_aiosmtpd(stats, host, port, pipelining)
    else:
        server = await loop.create_server(
            lambda: FastSmtp(stats, delay, pipelining), host, port, backlog=1024
        )
    control = await asyncio.start_server(
        lambda r, w: _control(stats, stop, r, w), host, control_port
    )
    print(f"relay ready impl={impl} port={port} delay={delay} pipelining={pipelining}", flush=True)
    await stop.wait()
    server.close()
    control.close()


def main() -> None:
    """Parse arguments and serve."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--control-port", type=int, required=True)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before every reply")
    ap.add_argument("--impl", choices=("fast", "aiosmtpd"), default="fast")
    ap.add_argument(
        "--no-pipelining",
        dest="pipelining",
        action="store_false",
        help="do not advertise PIPELINING (clients then send one command at a time)",
    )
    args = ap.parse_args()
    asyncio.run(
        serve(args.host, args.port, args.control_port, args.delay, args.impl, args.pipelining)
    )


if __name__ == "__main__":
    main()
