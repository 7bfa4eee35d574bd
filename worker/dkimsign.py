"""DKIM signing (RFC 6376, c=relaxed/simple) without dkimpy's per-message cost.

dkimpy re-parses the key on every call, canonicalizes through several regex passes and signs
RSA in pure Python: ~230 µs per message with Ed25519 and ~12 ms with RSA-2048, which would make
signing the most expensive step of a delivery. This signer parses the key once, canonicalizes the
message's header block in one pass, and signs through libsodium (Ed25519, RFC 8463) or OpenSSL
(RSA): ~40 µs and ~400 µs per message. Its signatures are those dkimpy makes (same tags,
relaxed header and simple body canonicalization), and the tests verify them with dkimpy.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from collections.abc import Callable, Sequence

CRLF = b"\r\n"
_WSP = re.compile(rb"[\t ]+")
#: fold the signature header near this column, as dkimpy does (RFC 5322 §2.1.1 recommends 78)
FOLD_AT = 72


def _relaxed(name: bytes, value: bytes) -> bytes:
    """RFC 6376 §3.4.2: lowercase name, unfolded value with runs of WSP as one space, stripped."""
    if b"\n" in value:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    if b"\t" in value or b"  " in value:  # most header values have neither: skip the regex
        value = _WSP.sub(b" ", value)
    return name.lower().rstrip() + b":" + value.strip()


def _headers(head: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of a header block (folded continuation lines kept with their field)."""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(CRLF):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + CRLF + line)
        elif line:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields


def _select(fields: list[tuple[bytes, bytes]], include: Sequence[bytes]) -> list[bytes]:
    """The canonical form of each signed field: the last unused instance of each name listed."""
    positions: dict[bytes, list[int]] = {}
    for i, (name, _) in enumerate(fields):
        positions.setdefault(name.lower().rstrip(), []).append(i)
    out = []
    for want in include:
        found = positions.get(want)
        if found:  # a name listed but absent is signed as absent (RFC 6376 §5.4.2)
            out.append(_relaxed(*fields[found.pop()]))
    return out


def _simple_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.3: no empty lines at the end, and a final CRLF."""
    while body.endswith(b"\r\n\r\n"):
        body = body[:-2]
    return body if body.endswith(CRLF) else body + CRLF


def _fold(value: bytes, prefix_len: int) -> bytes:
    """Fold a tag list at its spaces (and the signature in chunks) near FOLD_AT.

    Every break is CRLF + space where a space was, or inside ``b=`` where FWS is allowed
    (RFC 6376 §3.5), so the relaxed form, and thus the signed hash, is unchanged.
    """
    lines: list[bytes] = []
    line = b""
    room = FOLD_AT - prefix_len
    for word in value.split(b" "):
        if line and len(line) + 1 + len(word) > room:
            lines.append(line)
            line, room = b"", FOLD_AT - 1
        if word.startswith(b"b=") and len(line) + 1 + len(word) > room:
            if line:
                lines.append(line)
                line, room = b"", FOLD_AT - 1
            while len(word) > room:
                lines.append(word[:room])
                word, room = word[room:], FOLD_AT - 1
        line = line + b" " + word if line else word
    lines.append(line)
    return (CRLF + b" ").join(lines)


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
    """The ``DKIM-Signature:`` header field (ending in CRLF) for a CRLF-terminated message."""
    algorithm, signer = _signer(private_key)
    head, _, body = message.partition(b"\r\n\r\n")
    body_hash = base64.b64encode(hashlib.sha256(_simple_body(body)).digest())
    include = [h.lower() for h in include_headers]
    d = domain.encode()
    tags = [
        b"v=1",
        b"a=" + algorithm,
        b"c=relaxed/simple",
        b"d=" + d,
        b"i=@" + d,
        b"q=dns/txt",
        b"s=" + selector.encode(),
        b"t=%d" % int(time.time() if now is None else now),
        b"h=" + b" : ".join(include),
        b"bh=" + body_hash,
    ]
    unsigned = b"; ".join([*tags, b"b="])
    signed_data = b"".join(h + CRLF for h in _select(_headers(head + CRLF), include))
    signed_data += _relaxed(b"DKIM-Signature", unsigned)  # hashed without its CRLF (§3.7)
    signature = base64.b64encode(signer(signed_data))
    name = b"DKIM-Signature:"
    return name + b" " + _fold(b"; ".join([*tags, b"b=" + signature]), len(name) + 1) + CRLF
