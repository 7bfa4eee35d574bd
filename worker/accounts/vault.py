"""Secrets at rest: Fernet tokens under keys derived from ``MAILDISPATCH_SECRET_KEY``.

Every key in ``MAILDISPATCH_PREVIOUS_SECRET_KEYS`` still decrypts, so the secret key can be
rotated without losing a connected account: deploy the new key with the old one listed as
previous, run ``maildispatch accounts rotate-key`` (re-encrypts every row under the new key),
then drop the old key.

The plaintext binds the owner and channel it belongs to, so a token copied onto another row of
the database does not decrypt there.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from config.errors import MaildispatchError
from config.settings import Settings

#: HKDF "info": a key derived for account secrets is never the key that signs return paths
_INFO = b"maildispatch accounts vault v1"


class VaultError(MaildispatchError):
    """A stored secret cannot be decrypted with any configured key (or belongs elsewhere)."""

    exit_code = 78  # EX_CONFIG: the keys are the deployment's


def derive_key(secret_key: str) -> bytes:
    """The Fernet key (urlsafe base64 of 32 bytes) for one ``MAILDISPATCH_SECRET_KEY``."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
        secret_key.encode()
    )
    return base64.urlsafe_b64encode(raw)


class Vault:
    """Encrypts with the current key; decrypts with the current or any previous key."""

    def __init__(self, current: str, previous: Sequence[str] = ()) -> None:
        self._current = Fernet(derive_key(current))
        self._all = MultiFernet(
            [self._current, *(Fernet(derive_key(k)) for k in previous if k.strip())]
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        """The vault of this deployment's keys."""
        current, *previous = settings.verifying_keys()
        return cls(current, previous)

    def seal(self, owner: str, channel: str, secrets: Mapping[str, str]) -> str:
        """A token holding ``secrets``, bound to (owner, channel)."""
        plain = json.dumps({"owner": owner, "channel": channel, "secrets": dict(secrets)})
        return self._current.encrypt(plain.encode()).decode()

    def open(self, owner: str, channel: str, token: str) -> dict[str, str]:
        """The secrets of a token sealed for (owner, channel)."""
        try:
            data = json.loads(self._all.decrypt(token.encode()))
        except InvalidToken:
            raise VaultError(
                "stored credentials cannot be decrypted with MAILDISPATCH_SECRET_KEY or "
                "MAILDISPATCH_PREVIOUS_SECRET_KEYS"
            ) from None
        if data.get("owner") != owner or data.get("channel") != channel:
            raise VaultError("stored credentials belong to another account")
        return {str(k): str(v) for k, v in data["secrets"].items()}

    def is_current(self, token: str) -> bool:
        """Is this token encrypted under the current key?"""
        try:
            self._current.decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def rotate(self, token: str) -> str:
        """The same secrets, re-encrypted under the current key."""
        try:
            return self._all.rotate(token.encode()).decode()
        except InvalidToken:
            raise VaultError("stored credentials cannot be decrypted with any key") from None
