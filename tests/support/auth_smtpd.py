"""A user's mail server for tests: aiosmtpd with STARTTLS and AUTH, on a loopback port.

Its certificate is issued by a throwaway CA made here with ``cryptography``; an account trusts
it only through ``--ca-file``. AUTH is required, and offered only inside TLS; a server made with
``mechanisms=("LOGIN",)`` offers LOGIN alone, as Exchange-style servers do. Recipients are
scripted as by the MSC test relay (``reject-``, ``defer<N>-`` ...).

:func:`xoauth2_server` is Exchange Online after Basic authentication: ``AUTH XOAUTH2`` only,
the bearer token checked by a callable (the fake token endpoint's ``holder``), and the session
closed by the server after each message, so that every message needs a fresh login.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import ipaddress
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.relay import RecordingHandler, Relay
from tests.support.services import free_port

ALL_MECHANISMS = ("PLAIN", "LOGIN")


@dataclass(frozen=True)
class Pki:
    """A CA certificate (PEM file) and a server certificate and key it issued for 127.0.0.1."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """The server side's TLS context."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_pki(folder: Path) -> Pki:
    """A fresh CA and a server certificate for ``127.0.0.1`` / ``localhost``."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "maildispatch test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    pki.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


@dataclass
class Login:
    """One AUTH attempt the server saw."""

    mechanism: str
    username: str
    success: bool


class AuthHandler(RecordingHandler):
    """The recording relay's handler, which also notes logins and whether DATA came over TLS."""

    def __init__(self, users: dict[str, str]) -> None:
        super().__init__()
        self.users = users
        self.logins: list[Login] = []
        self.tls_data: list[bool] = []
        self.auth_lock = threading.Lock()

    def reset(self) -> None:
        """Forget messages and logins."""
        super().reset()
        with self.auth_lock:
            self.logins.clear()
            self.tls_data.clear()

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """Check the login against ``users``."""
        ok = False
        name = ""
        if isinstance(data, LoginPassword):
            name = data.login.decode(errors="replace")
            ok = self.users.get(name) == data.password.decode(errors="replace")
        with self.auth_lock:
            self.logins.append(Login(mechanism, name, ok))
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message, noting whether the session was encrypted."""
        transport = server.transport
        implicit = transport is not None and transport.get_extra_info("ssl_object") is not None
        with self.auth_lock:
            self.tls_data.append(session.ssl is not None or implicit)
        return await super().handle_DATA(server, session, envelope)


def auth_server(
    pki: Pki, users: dict[str, str], mechanisms: tuple[str, ...] = ALL_MECHANISMS
) -> Relay:
    """A STARTTLS + AUTH server (not started: call ``.start()``)."""
    return _server(pki, AuthHandler(users), [m for m in ALL_MECHANISMS if m not in mechanisms])


def _server(pki: Pki, handler: AuthHandler, excluded: list[str]) -> Relay:
    return Relay(
        free_port(),
        handler,
        tls_context=pki.server_context(),
        require_starttls=True,
        authenticator=handler.authenticate,
        auth_required=True,
        auth_require_tls=True,
        auth_exclude_mechanism=excluded,
    )


class XOAuth2Handler(AuthHandler):
    """Accepts ``AUTH XOAUTH2`` when ``holder(token)`` names the user; closes after each DATA."""

    def __init__(self, holder: Callable[[str], str | None]) -> None:
        super().__init__({})
        self.holder = holder

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """RFC-less but universal: base64 of ``user=U^Aauth=Bearer T^A^A``."""
        user = token = ""
        try:
            text = base64.b64decode(args[1], validate=True).decode() if len(args) > 1 else ""
            fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
            user, token = fields.get("user", ""), fields.get("auth", "").removeprefix("Bearer ")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            pass
        ok = bool(user) and self.holder(token) == user
        with self.auth_lock:
            self.logins.append(Login("XOAUTH2", user, ok))
        if ok:
            return AuthResult(success=True, handled=False)
        return AuthResult(
            success=False, handled=False, message="535 5.7.3 Authentication unsuccessful"
        )

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message, then end the session (the reply goes out first)."""
        answer = await super().handle_DATA(server, session, envelope)
        transport = server.transport
        if transport is not None:
            # at once, not a moment later: the client must never find this session open for
            # the next message (it reads the reply and the end together)
            asyncio.get_running_loop().call_soon(transport.close)
        return answer


def xoauth2_server(pki: Pki, holder: Callable[[str], str | None]) -> Relay:
    """A STARTTLS server that takes ``AUTH XOAUTH2`` only (not started: call ``.start()``)."""
    return _server(pki, XOAuth2Handler(holder), list(ALL_MECHANISMS))
