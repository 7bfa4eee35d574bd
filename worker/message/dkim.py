"""DKIM signing (RFC 6376, c=relaxed/simple) without dkimpy's per-message cost.

dkimpy re-parses the key on every call, canonicalizes through several regex passes and signs
RSA in pure Python, which made signing the most expensive step of a delivery (figures in
docs/performance.md). This signer parses the key once, canonicalizes the
message's header block in one pass, and signs through libsodium (Ed25519, RFC 8463) or OpenSSL
(RSA), several times to thirty times faster. Its signatures are those dkimpy makes (same tags,
relaxed header and simple body canonicalization), and the tests verify them with dkimpy.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CRLF = b"\r\n"
_WSP = re.compile(rb"[\t ]+")
#: fold the signature header near this column, as dkimpy does (RFC 5322 §2.1.1 recommends 78)
FOLD_AT = 72


@dataclass(frozen=True)
class DkimKey:
    """A DKIM signing key for one domain and selector (RSA PEM, or an Ed25519 seed in base64)."""

    domain: str
    selector: str
    private_key: bytes

    @classmethod
    def from_file(cls, path: str, domain: str, selector: str) -> DkimKey:
        """Load a private key file."""
        return cls(domain=domain, selector=selector, private_key=Path(path).read_bytes().strip())

    @property
    def algorithm(self) -> bytes:
        """``ed25519-sha256`` for Ed25519 keys (RFC 8463), else ``rsa-sha256``."""
        # dkimpy takes Ed25519 keys as the base64 32-byte seed, with no PEM armour
        return b"rsa-sha256" if b"-----" in self.private_key else b"ed25519-sha256"


def _canonical_headers(head: bytes, include: Sequence[bytes]) -> bytes:
    """The relaxed form of each signed field, each ending in CRLF, in ``include`` order.

    ``head`` is the header block without its final CRLF. For a name listed twice the last
    unused instance is taken each time; a name listed but absent is signed as absent
    (RFC 6376 §5.4.2). Continuation lines are unfolded first (CRLF before WSP removed, §3.4.2).
    """
    if b"\r\n " in head or b"\r\n\t" in head:
        head = head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")
    wanted = set(include)
    found: dict[bytes, list[bytes]] = {}
    for line in head.split(CRLF):
        name, _, value = line.partition(b":")
        key = name.lower().rstrip()
        if key in wanted:
            found.setdefault(key, []).append(value)
    out = []
    for name in include:
        values = found.get(name)
        if values:
            value = values.pop()
            if b"\t" in value or b"  " in value:
                value = _WSP.sub(b" ", value)
            out.append(name + b":" + value.strip() + CRLF)
    return b"".join(out)


def _simple_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.3: no empty lines at the end, and a final CRLF."""
    while body.endswith(b"\r\n\r\n"):
        body = body[:-2]
    return body if body.endswith(CRLF) else body + CRLF


def _fold(value: bytes, prefix_len: int) -> bytes:
    """Fold a tag list at its spaces near FOLD_AT.

    Every break is CRLF + space where a space was, so the relaxed form, and thus the signed
    hash, is unchanged (RFC 6376 §3.5).
    """
    lines: list[bytes] = []
    line = b""
    room = FOLD_AT - prefix_len
    for word in value.split(b" "):
        if line and len(line) + 1 + len(word) > room:
            lines.append(line)
            line, room = b"", FOLD_AT - 1
        line = line + b" " + word if line else word
    lines.append(line)
    return (CRLF + b" ").join(lines)


@functools.lru_cache(maxsize=64)
def _fixed_tags(algorithm: bytes, domain: str, selector: str, include: tuple[bytes, ...]) -> bytes:
    """The tags that are the same for every message of a key, folded once: ``v`` to ``h``."""
    d = domain.encode()
    tags = [
        b"v=1",
        b"a=" + algorithm,
        b"c=relaxed/simple",
        b"d=" + d,
        b"i=@" + d,
        b"q=dns/txt",
        b"s=" + selector.encode(),
        b"h=" + b" : ".join(include),
    ]
    return _fold(b"; ".join(tags), len(_NAME) + 1)


def _fold_signature(signature: bytes) -> bytes:
    """``b=`` and the base64 signature, broken every FOLD_AT - 1 characters (FWS, §3.5)."""
    chunks = [b"b=" + signature[: FOLD_AT - 3]]
    rest = signature[FOLD_AT - 3 :]
    while rest:
        chunks.append(rest[: FOLD_AT - 1])
        rest = rest[FOLD_AT - 1 :]
    return (CRLF + b" ").join(chunks)


_NAME = b"DKIM-Signature:"


@functools.lru_cache(maxsize=16)
def _signer(private_key: bytes) -> tuple[bytes, Callable[[bytes], bytes]]:
    """The algorithm name and a function signing the header hash input, for a key (parsed once)."""
    if b"-----" in private_key:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        key = serialization.load_pem_private_key(private_key, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("a PEM DKIM key must be RSA (use a base64 seed for Ed25519)")

        def rsa_sign(data: bytes) -> bytes:
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())

        return b"rsa-sha256", rsa_sign
    from nacl.bindings import crypto_sign, crypto_sign_seed_keypair

    _, secret = crypto_sign_seed_keypair(base64.b64decode(private_key))

    def ed25519_sign(data: bytes) -> bytes:
        # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the header hash input; crypto_sign
        # returns the 64-byte signature followed by what it signed
        return bytes(crypto_sign(hashlib.sha256(data).digest(), secret)[:64])

    return b"ed25519-sha256", ed25519_sign


def sign(
    message: bytes,
    selector: str,
    domain: str,
    private_key: bytes,
    include_headers: Sequence[bytes],
    now: float | None = None,
) -> bytes:
    """The ``DKIM-Signature:`` header field (ending in CRLF) for a CRLF-terminated message.

    The tags every message of this key shares are folded once (``_fixed_tags``); ``t=`` and
    ``bh=`` follow on a line of their own and ``b=`` on the next ones. Folding only ever puts a
    CRLF before a space, so the header hashed (relaxed, ``b=`` empty) is the header written.
    """
    algorithm, signer = _signer(private_key)
    head, _, body = message.partition(b"\r\n\r\n")
    body_hash = base64.b64encode(hashlib.sha256(_simple_body(body)).digest())
    include = tuple(h.lower() for h in include_headers)
    fixed = _fixed_tags(algorithm, domain, selector, include)
    varying = b"t=%d; bh=%s" % (int(time.time() if now is None else now), body_hash)
    # the header as hashed: relaxed (unfolded, one space per run of WSP), empty b=, no CRLF
    unfolded = fixed.replace(CRLF + b" ", b" ")
    signed_data = _canonical_headers(head, include)
    signed_data += b"dkim-signature:" + unfolded + b"; " + varying + b"; b="
    signature = base64.b64encode(signer(signed_data))
    return (
        _NAME
        + b" "
        + fixed
        + b";"
        + CRLF
        + b" "
        + varying
        + b";"
        + CRLF
        + b" "
        + _fold_signature(signature)
        + CRLF
    )
