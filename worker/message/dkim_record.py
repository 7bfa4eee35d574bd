"""The DNS record to publish for the MSC DKIM key, self-checked (``maildispatch dkim record``).

Signs a sample message with the configured key (our signer, ``worker/message/dkim.py``) and verifies
it with dkimpy, an independent implementation, against the record it prints: an operator sees
what to publish and that what maildispatch signs will verify once it is published.
"""

from __future__ import annotations

import base64
import uuid


def public_record(private_key: bytes) -> str:
    """The ``v=DKIM1`` TXT record value for a private key (RSA PEM or Ed25519 base64 seed)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    if b"-----" in private_key:
        key = serialization.load_pem_private_key(private_key, password=None)
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    seed = base64.b64decode(private_key)
    public = (
        ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return "v=DKIM1; k=ed25519; p=" + base64.b64encode(public).decode()


def check(private_key: bytes, domain: str, selector: str) -> tuple[str, str, bool]:
    """(DNS name, record, whether dkimpy verifies a message we signed against that record)."""
    import dkim

    from producers.job import parse_job
    from worker.message.build import build_message
    from worker.message.dkim import DkimKey

    name = f"{selector}._domainkey.{domain}"
    record = public_record(private_key)
    sample = parse_job(
        {
            "id": str(uuid.uuid4()),
            "owner": "dkim-check",
            "identity": "DKIM check <check@example.com>",
            "to": ["check@example.com"],
            "subject": "DKIM self-check",
            "text": "A message signed the way maildispatch signs every MSC message.\n",
        }
    )
    key = DkimKey(domain=domain, selector=selector, private_key=private_key)
    data = build_message(sample, domain=domain, sender=f"check@{domain}", dkim_key=key).data

    def dns(qname: bytes, timeout: int = 5) -> bytes:
        return record.encode() if qname.decode().rstrip(".") == name else b""

    return name, record, bool(dkim.verify(data, dnsfunc=dns))
