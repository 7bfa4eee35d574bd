"""Message building: identity, Sender, stable Message-ID, no Bcc header, parseable MIME, DKIM."""

from __future__ import annotations

import base64
import email
import email.policy

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from producers.job import parse_job
from worker.message.build import build_message
from worker.message.dkim import DkimKey


def make_job(**overrides: object):  # type: ignore[no-untyped-def]
    data: dict[str, object] = {
        "owner": "u1",
        "identity": "Zoë Example <zoe@example.com>",
        "to": ["Bob <bob@example.org>"],
        "cc": ["carol@example.net"],
        "bcc": ["secret@example.net"],
        "reply_to": "help@example.com",
        "subject": "Ünïcode subject " + "long " * 30,
        "text": "Hello Bob\nline two é\n",
        "html": "<p>Hello</p>",
        "headers": {"X-Campaign": "spring"},
        "attachments": [
            {
                "filename": "report.csv",
                "content_type": "text/csv",
                "content": base64.b64encode(b"a,b\n1,2\n").decode(),
            }
        ],
    }
    return parse_job(data | overrides)


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def test_headers_identity_and_sender() -> None:
    job = make_job()
    msg = parse(build_message(job, domain="mail.op.test", sender="mailer@mail.op.test").data)
    assert msg["From"].addresses[0].display_name == "Zoë Example"
    assert msg["From"].addresses[0].addr_spec == "zoe@example.com"
    assert msg["Sender"] == "mailer@mail.op.test"
    assert [a.addr_spec for a in msg["To"].addresses] == ["bob@example.org"]
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["carol@example.net"]
    assert msg["Reply-To"] == "help@example.com"
    assert str(msg["Subject"]) == job.subject
    assert msg["X-Campaign"] == "spring"
    assert msg["Bcc"] is None
    assert b"secret@example.net" not in build_message(job, domain="d.test").data


def test_message_id_is_stable_per_job() -> None:
    job = make_job()
    first = build_message(job, domain="mail.op.test")
    second = build_message(job, domain="mail.op.test")
    assert first.message_id == second.message_id == f"<{job.id}@mail.op.test>"
    assert parse(first.data)["Message-ID"] == first.message_id


def test_mime_structure_and_bodies() -> None:
    msg = parse(build_message(make_job(), domain="d.test").data)
    assert msg.get_content_type() == "multipart/mixed"
    body = msg.get_body(preferencelist=("plain",))
    assert (
        body is not None and body.get_content().replace("\r\n", "\n") == "Hello Bob\nline two é\n"
    )
    html = msg.get_body(preferencelist=("html",))
    assert html is not None and "<p>Hello</p>" in html.get_content()
    attachment = next(msg.iter_attachments())
    assert attachment.get_filename() == "report.csv"
    assert attachment.get_content() == "a,b\n1,2\n"


def test_lines_are_crlf_and_short() -> None:
    data = build_message(make_job(text="x" * 5000), domain="d.test").data
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_gmail_from_rewrite_keeps_display_name() -> None:
    out = build_message(make_job(), domain="d.test", from_address="connected@gmail.com")
    assert out.from_address == "connected@gmail.com"
    assert parse(out.data)["From"].addresses[0].display_name == "Zoë Example"


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_dkim_signature_verifies(algorithm: str) -> None:
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = base64.b64encode(
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        record = b"v=DKIM1; k=rsa; p=" + public
    else:
        ed = ed25519.Ed25519PrivateKey.generate()
        private = base64.b64encode(
            ed.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        )
        public = base64.b64encode(
            ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        record = b"v=DKIM1; k=ed25519; p=" + public
    dkim_key = DkimKey(domain="mail.op.test", selector="md1", private_key=private)
    data = build_message(
        make_job(), domain="mail.op.test", sender="m@mail.op.test", dkim_key=dkim_key
    ).data
    assert data.startswith(b"DKIM-Signature:")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"md1._domainkey.mail.op.test."
        return record

    assert dkim.verify(data, dnsfunc=dns)
    assert not dkim.verify(data.replace(b"Hello Bob", b"Hello Eve"), dnsfunc=dns)
