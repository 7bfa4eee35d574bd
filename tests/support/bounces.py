"""Bounce messages for ingest tests: templates in tests/data/bounces/ingest-*.eml, filled in.

A template names ``{{RETURN_PATH}}``, ``{{RECIPIENT}}``, ``{{MESSAGE_ID}}``, ``{{SUBJECT}}`` and
``{{BOUNCE_DOMAIN}}``; line ends become CRLF, as they travel over SMTP.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import uuid
from pathlib import Path

import aiosmtplib

from tests.support.services import REPO

DATA = REPO / "tests" / "data" / "bounces"


def render(name: str, **values: str) -> bytes:
    """The template ``ingest-<name>.eml`` with its placeholders replaced."""
    text = (DATA / f"ingest-{name}.eml").read_text(encoding="utf-8")
    defaults = {
        "MESSAGE_ID": f"<{uuid.uuid4()}@mail.operator.test>",
        "SUBJECT": "Hello",
        "BOUNCE_DOMAIN": "bounces.operator.test",
    }
    for key, value in (defaults | values).items():
        text = text.replace("{{" + key + "}}", value)
    assert "{{" not in text, f"unfilled placeholder in ingest-{name}.eml"
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def forged_return_path(domain: str = "bounces.operator.test") -> str:
    """A well-formed return path whose HMAC is wrong."""
    token = base64.b32encode(uuid.uuid4().bytes + b"\x00" * 10).decode().rstrip("=").lower()
    return f"b+{token}@{domain}"


def deliver(
    port: int,
    raw: bytes,
    *rcpts: str,
    sender: str = "",
    declare_size: bool = True,
    tls_ca: Path | None = None,
) -> tuple[str, int, str]:
    """Send ``raw`` over SMTP like a remote MTA; returns (stage, code, text) of the answer that
    ended the transaction: the DATA reply, or the first refusal (stage ``mail``/``rcpt``/``data``).
    With ``tls_ca``, STARTTLS first, the server's certificate checked against that CA.
    """

    async def go() -> tuple[str, int, str]:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=port,
            timeout=20,
            start_tls=False,
            local_hostname="mx.remote.example",
        )
        await client.connect()
        try:
            if tls_ca is not None:
                await client.starttls(tls_context=ssl.create_default_context(cafile=tls_ca))
            options = [f"SIZE={len(raw)}"] if declare_size else []
            reply = await client.mail(sender, options=options)
            for rcpt in rcpts:
                reply = await client.rcpt(rcpt)
            reply = await client.data(raw)
            return "data", reply.code, reply.message
        except aiosmtplib.SMTPResponseException as exc:
            stage = {
                aiosmtplib.SMTPSenderRefused: "mail",
                aiosmtplib.SMTPRecipientRefused: "rcpt",
                aiosmtplib.SMTPDataError: "data",
            }.get(type(exc), "other")
            return stage, exc.code, exc.message
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException):
                await client.quit()

    return asyncio.run(go())
