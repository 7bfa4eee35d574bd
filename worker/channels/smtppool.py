"""Pooled aiosmtplib connections to one SMTP server, and its transactions.

Used by the MSC channel (the operator's relays) and the custom SMTP channel (the user's server).
Its errors become ours in worker/channels/smtperrors.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib.auth import auth_login_encode
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX, normalize_message_line_endings
from aiosmtplib.typing import Default, SMTPStatus

from worker.channels.base import Envelope, Receipt
from worker.channels.smtperrors import from_reply, translate
from worker.channels.smtptext import printable
from worker.consume.gate import Gate
from worker.errors import DeliveryError

Security = Literal["starttls", "tls", "none"]
#: reuse an idle connection only after a NOOP once it has been idle this long (servers time out)
IDLE_CHECK_AFTER = 5.0


class _Smtp(aiosmtplib.SMTP):
    """aiosmtplib with AUTH LOGIN in its original challenge-response form.

    aiosmtplib sends the username along with ``AUTH LOGIN``; strict servers (Exchange-style
    LOGIN-only setups among them) ignore it, prompt for the username, and take the password
    for it. Waiting for each prompt works with every LOGIN server. CRAM-MD5 is not offered:
    it needs the server to keep the password in the clear, and PLAIN runs inside TLS anyway.
    """

    AUTH_METHODS = ("plain", "login")

    async def auth_login(
        self,
        username: str | bytes,
        password: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,
    ) -> SMTPResponse:
        """``AUTH LOGIN``, then the username and the password each after its 334 prompt."""
        user, secret = auth_login_encode(username, password)
        response = await self.execute_command(b"AUTH", b"LOGIN", timeout=timeout)
        for answer in (user, secret):
            if response.code != SMTPStatus.auth_continue:
                raise aiosmtplib.SMTPAuthenticationError(response.code, response.message)
            response = await self.execute_command(answer, timeout=timeout)
        if response.code != SMTPStatus.auth_successful:
            raise aiosmtplib.SMTPAuthenticationError(response.code, response.message)
        return response


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to connect: host, port, TLS mode, credentials, trusted CA."""

    host: str
    port: int
    security: Security = "none"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    ca_data: str | None = None  # PEM text of trusted CAs (a user's account keeps it in the store)
    timeout: float = 60.0
    #: XOAUTH2 instead of a password: a digest of the OAuth grant (part of the pool key) and
    #: what gives each new connection a current access token
    grant: str | None = None
    token: Callable[[], Awaitable[str]] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_url(cls, url: str, timeout: float = 60.0) -> SmtpServer:
        """``smtp://[user:pass@]host:port`` (plain), ``smtp+starttls://`` or ``smtps://`` (TLS)."""
        parts = urlsplit(url)
        security: Security = {"smtps": "tls", "smtp+starttls": "starttls"}.get(parts.scheme, "none")  # type: ignore[assignment]
        if parts.scheme not in ("smtp", "smtps", "smtp+starttls") or not parts.hostname:
            raise ValueError(f"not an SMTP relay URL: {parts.scheme}://{parts.hostname}")
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if security == "tls" else 25),
            security=security,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout=timeout,
        )

    def __repr__(self) -> str:  # never show the password
        return f"SmtpServer({self.host}:{self.port}, {self.security}, user={self.username!r})"

    def tls_context(self) -> ssl.SSLContext:
        """Certificates are always verified; ``ca_file`` / ``ca_data`` narrow trust to that CA."""
        return ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)


class ClosedAtMail(Exception):
    """The connection turned out closed at MAIL: no reply came, or a 421 (RFC 5321 section 3.8).

    Nothing of the message had gone out, so another connection may carry it: ``SmtpPool.send``
    does so when the connection was an idle one, which the server may have closed (an idle
    timeout, a restart) as it was taken. ``error`` is what aiosmtplib raised.
    """

    def __init__(self, error: aiosmtplib.SMTPException) -> None:
        super().__init__(str(error))
        self.error = error


async def transaction(
    conn: aiosmtplib.SMTP, mail_from: str, rcpt_to: Sequence[str], data: bytes
) -> tuple[dict[str, SMTPResponse], str]:
    """MAIL, RCPT per recipient and DATA on an open connection: ``SMTP.sendmail`` without its cost.

    It raises what ``sendmail`` raises and resets the envelope where it does, but skips the
    parsing of every address twice through ``email.utils.parseaddr`` (the addresses were
    validated when the job was) and the second pass over the message to size it: together about
    half of aiosmtplib's CPU per message (docs/performance.md). A server that offers PIPELINING
    gets MAIL, the RCPTs and DATA in one write (``_pipelined``). A connection found closed at
    MAIL raises ``ClosedAtMail`` instead.
    """
    if conn.is_ehlo_or_helo_needed:
        try:
            await conn.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not conn.is_connected:
                raise
            await conn.helo()
    utf8 = not (mail_from.isascii() and all(r.isascii() for r in rcpt_to))
    if utf8 and not conn.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
    encoding = "utf-8" if utf8 else "ascii"
    options = [b"SMTPUTF8"] if utf8 else []
    if conn.supports_extension("size"):
        options.insert(0, b"size=%d" % len(data))  # our messages have CRLF line endings already
    # every reply within the connection's timeout, as aiosmtplib's own commands wait, but with
    # one timer per transaction instead of one per command: the deadline starts two timeouts
    # away and is moved only when less than one timeout is left before a reply is awaited, so
    # each reply gets at least the timeout and a server that stops answering is given up within
    # two. A timeout raises TimeoutError; the pool then drops the connection.
    timeout = conn.timeout if conn.timeout is not None else 300.0
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + 2 * timeout) as deadline:

            def reply_time() -> None:
                now = loop.time()
                if (deadline.when() or 0.0) - now < timeout:
                    deadline.reschedule(now + 2 * timeout)

            envelope = _pipelined if conn.supports_extension("pipelining") else _one_by_one
            errors = await envelope(conn, mail_from, rcpt_to, encoding, options, reply_time)
            response = await _message(conn, data, reply_time)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        # as sendmail does: leave the connection ready for the next envelope (unless it was
        # closed: a 421, or a DATA phase that could only be ended by closing, see _pipelined)
        if conn.is_connected:
            with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
                await conn.rset()
        raise
    refused = {e.recipient: SMTPResponse(e.code, e.message) for e in errors}
    return refused, response.message


async def _one_by_one(
    conn: aiosmtplib.SMTP,
    mail_from: str,
    rcpt_to: Sequence[str],
    encoding: str,
    options: list[bytes],
    reply_time: Callable[[], None],
) -> list[aiosmtplib.SMTPRecipientRefused]:
    """MAIL, RCPT per recipient and DATA, each after the reply to the one before.

    Returns the refused recipients once DATA got its 354; raises ``SMTPSenderRefused``,
    ``SMTPRecipientsRefused`` (all refused: DATA is not sent) or ``SMTPDataError``.
    """
    try:
        response = await conn.execute_command(
            b"MAIL", b"FROM:<" + mail_from.encode(encoding) + b">", *options, timeout=None
        )
    except aiosmtplib.SMTPServerDisconnected as exc:
        raise ClosedAtMail(exc) from exc
    if response.code != SMTPStatus.completed:
        refused = aiosmtplib.SMTPSenderRefused(response.code, response.message, mail_from)
        raise ClosedAtMail(refused) if response.code == SMTPStatus.domain_unavailable else refused
    errors: list[aiosmtplib.SMTPRecipientRefused] = []
    for rcpt in rcpt_to:
        reply_time()
        response = await conn.execute_command(
            b"RCPT", b"TO:<" + rcpt.encode(encoding) + b">", timeout=None
        )
        if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            errors.append(aiosmtplib.SMTPRecipientRefused(response.code, response.message, rcpt))
    if len(errors) == len(rcpt_to):
        raise aiosmtplib.SMTPRecipientsRefused(errors)
    reply_time()
    response = await conn.execute_command(b"DATA", timeout=None)
    if response.code != SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return errors


async def _pipelined(
    conn: aiosmtplib.SMTP,
    mail_from: str,
    rcpt_to: Sequence[str],
    encoding: str,
    options: list[bytes],
    reply_time: Callable[[], None],
) -> list[aiosmtplib.SMTPRecipientRefused]:
    """MAIL, every RCPT and DATA in one write, then their replies in order (RFC 2920).

    Returns the refused recipients once DATA got its 354, and raises what the one-by-one path
    raises otherwise. Every reply is read before deciding (RFC 2920 section 3.1), so that the
    connection is in step for the RSET that follows a refusal.
    """
    lines = [
        b" ".join([b"MAIL", b"FROM:<" + mail_from.encode(encoding) + b">", *options]),
        *(b"RCPT TO:<" + rcpt.encode(encoding) + b">" for rcpt in rcpt_to),
        b"DATA",
    ]
    replies = await _exchange(conn, lines, reply_time)
    mail, rcpts, data = replies[0], replies[1:-1], replies[-1]
    if len(replies) < len(lines):  # a 421 cut the exchange short; _exchange closed the connection
        last = replies[-1]
        if len(replies) == 1:
            raise ClosedAtMail(aiosmtplib.SMTPSenderRefused(last.code, last.message, mail_from))
        raise aiosmtplib.SMTPResponseException(last.code, last.message)
    errors = [
        aiosmtplib.SMTPRecipientRefused(r.code, r.message, rcpt)
        for rcpt, r in zip(rcpt_to, rcpts, strict=True)
        if r.code not in (SMTPStatus.completed, SMTPStatus.will_forward)
    ]
    refused = mail.code != SMTPStatus.completed or len(errors) == len(rcpt_to)
    if refused and data.code == SMTPStatus.start_input:
        # A broken server took DATA with no envelope to deliver to. RFC 2920 section 3.1 allows
        # ending it with "." alone, but such a server may well deliver that empty message (to
        # whom, it has already got wrong); closing mid-DATA is the one end that RFC 5321 section
        # 4.1.1.4 makes it discard. It costs a reconnection on a path that should never run.
        conn.close()
    if mail.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPSenderRefused(mail.code, mail.message, mail_from)
    if len(errors) == len(rcpt_to):
        raise aiosmtplib.SMTPRecipientsRefused(errors)
    if data.code != SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(data.code, data.message)
    return errors


async def _exchange(
    conn: aiosmtplib.SMTP, lines: Sequence[bytes], reply_time: Callable[[], None]
) -> list[SMTPResponse]:
    """Write ``lines`` at once, then read one reply per line in order.

    ``SMTPProtocol.execute_command`` for a group: the same CR/LF injection check and lock, the
    reply marked as expected before the write. A 421 ends it (the server is closing the channel,
    RFC 5321 section 3.8: no more replies come) and closes the connection, as
    ``SMTP.execute_command`` does; so does any error, as unread replies would answer the next
    commands.
    """
    protocol = conn.protocol
    lock = protocol._command_lock if protocol is not None else None
    if protocol is None or lock is None:
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    if any(COMMAND_INJECTION_REGEX.search(line) for line in lines):
        raise ValueError("Command arg contains a prohibited control character")
    replies: list[SMTPResponse] = []
    async with lock:
        try:
            protocol._response_pending = True
            protocol.write(b"".join(line + b"\r\n" for line in lines))
            for _ in lines:
                reply_time()
                # aiosmtplib parses one reply per read from the socket; replies that arrived
                # together wait in its buffer, where read_response alone would not look
                reply = protocol._read_response_from_buffer()
                if reply is None:
                    reply = await protocol.read_response(timeout=None)
                replies.append(reply)
                if reply.code == SMTPStatus.domain_unavailable:
                    conn.close()
                    break
        except BaseException as exc:
            conn.close()
            if not replies and isinstance(exc, aiosmtplib.SMTPServerDisconnected):
                raise ClosedAtMail(exc) from exc
            raise
    return replies


def _transparent(data: bytes) -> bytes:
    """The message as DATA carries it: dot-stuffed, CRLF line endings, ended by ``.``CRLF.

    What ``aiosmtplib`` does with two regular expressions over the whole message, done with
    ``bytes`` methods: messages built by maildispatch already have CRLF line endings (checked
    here by counting; anything else goes through aiosmtplib's own normalization).
    """
    if data.count(b"\n") != data.count(b"\r\n") or data.count(b"\r") != data.count(b"\r\n"):
        data = normalize_message_line_endings(data)
    elif not data.endswith(b"\r\n"):
        data += b"\r\n"
    if b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data + b".\r\n"


async def _message(
    conn: aiosmtplib.SMTP, data: bytes, reply_time: Callable[[], None]
) -> SMTPResponse:
    """The message after DATA's 354, and the reply to its end: ``SMTP.data``'s second half.

    The transparency pass is cheaper than aiosmtplib's (``_transparent``). No timeout of its
    own: ``reply_time`` gives the reply its time under ``transaction``'s deadline. A lost
    connection closes the client, as ``SMTP.data`` does.
    """
    protocol = conn.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    reply_time()
    try:
        protocol.write(_transparent(data))
        response = await protocol.read_response(timeout=None)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        conn.close()
        raise
    if response.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


#: opens the TCP connection for a pool itself (host, port, timeout): the user channel's check of
#: the resolved address (netguard); without one aiosmtplib resolves and connects
Connector = Callable[[str, int, float], Awaitable[socket.socket]]


class SmtpPool:
    """Up to ``size`` concurrent connections to one server, kept open and reused across tasks."""

    def __init__(
        self,
        server: SmtpServer,
        size: int,
        local_hostname: str | None = None,
        connector: Connector | None = None,
    ) -> None:
        self.server = server
        self.size = size
        self.local_hostname = local_hostname
        self.connector = connector
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._slots = Gate(size)  # FIFO; jobs of a whole group wait here

    def _new(self, sock: socket.socket | None = None) -> aiosmtplib.SMTP:
        s = self.server
        return _Smtp(
            hostname=s.host,  # with ``sock``: the name TLS verifies
            port=s.port if sock is None else None,
            sock=sock,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            tls_context=s.tls_context() if s.security != "none" else None,
            username=s.username,
            password=s.password,
            oauth_token_generator=s.token,
            timeout=s.timeout,
            local_hostname=self.local_hostname,
        )

    async def _checkout(self) -> tuple[aiosmtplib.SMTP, bool]:
        """An idle connection (and True), else a new one (and False)."""
        while self._idle:
            conn, since = self._idle.pop()
            if not conn.is_connected:
                continue
            if time.monotonic() - since > IDLE_CHECK_AFTER:
                try:
                    await conn.noop()
                except (aiosmtplib.SMTPException, OSError):
                    conn.close()
                    continue
                except BaseException:  # cancelled: in no one's hands, so closed here
                    conn.close()
                    raise
            return conn, True
        return await self._connect(), False

    async def _connect(self) -> aiosmtplib.SMTP:
        if self.connector is None:
            conn = self._new()
            await conn.connect()
            return conn
        sock = await self.connector(self.server.host, self.server.port, self.server.timeout)
        try:
            conn = self._new(sock)
            await conn.connect()
        except BaseException:
            sock.close()
            raise
        return conn

    async def send(self, envelope: Envelope, data: bytes) -> Receipt:
        """One SMTP transaction; raises DeliveryError for a failure of the whole transaction."""
        async with self._slots:
            conn: aiosmtplib.SMTP | None = None
            try:
                conn, reused = await self._checkout()
                while True:
                    try:
                        refused, reply = await transaction(
                            conn, envelope.mail_from, envelope.rcpt_to, data
                        )
                        break
                    except ClosedAtMail as closed:
                        if not reused:
                            raise closed.error from None
                    # the server had closed this idle connection as it was taken: nothing of
                    # the message went out, so a new connection carries it, in this attempt
                    conn.close()
                    conn = None
                    conn, reused = await self._connect(), False
            except aiosmtplib.SMTPRecipientsRefused as exc:
                if conn is not None and conn.is_connected:
                    self._idle.append((conn, time.monotonic()))
                return Receipt(
                    reply_code=None,
                    text="all recipients refused",
                    refused={
                        r.recipient: from_reply(r.code, r.message, "RCPT") for r in exc.recipients
                    },
                )
            except BaseException as exc:
                if conn is not None:
                    if (
                        isinstance(exc, aiosmtplib.SMTPResponseException)
                        and conn.is_connected
                        and exc.code != 421
                    ):
                        self._idle.append((conn, time.monotonic()))  # envelope was RSET
                    else:
                        conn.close()
                if isinstance(exc, Exception) and not isinstance(exc, DeliveryError):
                    raise translate(exc) from exc
                raise
            self._idle.append((conn, time.monotonic()))
        return Receipt(
            reply_code=250,  # sendmail returns only after DATA's 250
            text=printable(reply),
            refused={rcpt: from_reply(r.code, r.message, "RCPT") for rcpt, r in refused.items()},
        )

    async def close(self) -> None:
        """Close every idle connection politely."""
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            try:
                await asyncio.wait_for(conn.quit(), 2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                conn.close()


__all__ = ["ClosedAtMail", "SMTPResponse", "SmtpPool", "SmtpServer", "from_reply", "translate"]
