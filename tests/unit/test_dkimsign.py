"""worker/message/dkim.py: signatures that dkimpy verifies, with the tags dkimpy itself would write."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from producers.job import SendJob
from worker.message import dkim as dkimsign
from worker.message.build import DKIM_HEADERS, build_message
from worker.message.dkim import DkimKey

DOMAIN = "mail.op.test"
SELECTOR = "md1"


def _keys(algorithm: str) -> tuple[bytes, bytes]:
    """(private key as DkimKey takes it, the DNS TXT record)."""
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    ed = ed25519.Ed25519PrivateKey.generate()
    seed = ed.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = ed.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(seed), b"v=DKIM1; k=ed25519; p=" + base64.b64encode(public)


def _dns(record: bytes) -> Callable[..., bytes]:
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        assert name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode()
        return record

    return lookup


JOBS = {
    "plain": {"text": "Hello Bob\n"},
    "many recipients, folded To": {
        "to": [f"Person Number {i} <person{i}@example.org>" for i in range(12)],
        "cc": ["cc@example.net"],
        "text": "Hi all\n",
    },
    "non-ASCII subject and name, html": {
        "identity": "Zoë Ünïcode <zoe@acme.example>",
        "subject": "Grüße aus Köln — " + "ein sehr langer Betreff " * 4,
        "text": "Grüße\n",
        "html": "<p>Grüße</p>",
    },
    "trailing blank lines and spaces": {"text": "line with spaces   \n\n\n\n"},
    "attachment and extra header": {
        "text": "see attached\n",
        "headers": {"X-Campaign": "spring\tsale   2026"},
        "attachments": [{"filename": "a.txt", "content_type": "text/plain", "content": "aGVsbG8="}],
    },
}


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
@pytest.mark.parametrize("case", list(JOBS))
def test_signature_verifies_with_dkimpy(algorithm: str, case: str) -> None:
    private, record = _keys(algorithm)
    job = SendJob.model_validate(
        {
            "owner": "o",
            "identity": "Ann <ann@acme.example>",
            "to": ["bob@example.org"],
            "subject": "Hi",
        }
        | JOBS[case]
    )
    key = DkimKey(domain=DOMAIN, selector=SELECTOR, private_key=private)
    data = build_message(job, domain=DOMAIN, sender=f"m@{DOMAIN}", dkim_key=key).data
    signature = data.split(b"\r\n\r\n", 1)[0].split(b"\r\nFrom:", 1)[0]
    assert all(len(line) <= 78 for line in signature.split(b"\r\n"))
    assert dkim.verify(data, dnsfunc=_dns(record))
    head, _, body = data.partition(b"\r\n\r\n")
    assert not dkim.verify(
        head + b"\r\n\r\n" + body.replace(b"\r\n", b"\r\nX", 1), dnsfunc=_dns(record)
    )
    assert not dkim.verify(data.replace(b"Subject: ", b"Subject: Re: ", 1), dnsfunc=_dns(record))


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_tags_are_those_dkimpy_writes(algorithm: str) -> None:
    private, _ = _keys(algorithm)
    message = (
        b"From: Ann <ann@acme.example>\r\nTo: bob@example.org\r\nSubject: Hi\r\n"
        b"Date: Sun, 01 Mar 2026 10:00:00 GMT\r\nMessage-ID: <1@x>\r\n\r\nHello\r\n"
    )
    now = time.time()
    ours = dkim.parse_tag_value(
        dkimsign.sign(message, SELECTOR, DOMAIN, private, DKIM_HEADERS, now).split(b":", 1)[1]
    )
    theirs = dkim.parse_tag_value(
        dkim.sign(
            message,
            SELECTOR.encode(),
            DOMAIN.encode(),
            private,
            include_headers=DKIM_HEADERS,
            signature_algorithm=DkimKey(DOMAIN, SELECTOR, private).algorithm,
        ).split(b":", 1)[1]
    )
    for tag in (b"v", b"a", b"c", b"d", b"i", b"q", b"s", b"bh"):
        assert ours[tag] == theirs[tag], tag
    assert ours[b"h"].replace(b" ", b"").replace(b"\r\n", b"") == theirs[b"h"].replace(
        b" ", b""
    ).replace(b"\r\n", b"")
    assert abs(int(ours[b"t"]) - int(theirs[b"t"])) <= 2


def test_list_unsubscribe_is_covered_by_the_signature() -> None:
    # RFC 8058 §4: receivers honour one-click only when the DKIM signature covers both headers
    from config.settings import Settings
    from worker.message.unsubscribe import job_headers

    private, record = _keys("ed25519")
    settings = Settings(secret_key="u" * 40, public_url="https://mail.example.test", _env_file=None)  # type: ignore[call-arg]
    job = SendJob.model_validate(
        {
            "owner": "o",
            "identity": "Ann <ann@acme.example>",
            "to": ["bob@example.org"],
            "text": "Hi",
            "unsubscribe": True,
        }
    )
    key = DkimKey(domain=DOMAIN, selector=SELECTOR, private_key=private)
    headers = job_headers(job, settings)
    data = build_message(job, domain=DOMAIN, dkim_key=key, extra_headers=headers).data
    assert dkim.verify(data, dnsfunc=_dns(record))
    signature = data.split(b"\r\nFrom:", 1)[0].replace(b"\r\n ", b" ")
    assert b"list-unsubscribe : list-unsubscribe-post" in signature
    for name, value in headers:  # changing either breaks the signature
        changed = data.replace(value.encode()[-12:], b"x" * 12, 1)
        assert changed != data and not dkim.verify(changed, dnsfunc=_dns(record)), name
