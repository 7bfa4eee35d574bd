"""Secrets at rest: Fernet under keys derived from the secret key, rotation, row binding."""

from __future__ import annotations

import pytest

from worker.accounts.vault import Vault, VaultError, derive_key

OLD, NEW = "old-secret-key-0123456789abcdef", "new-secret-key-fedcba9876543210"


def test_sealed_secrets_open_only_for_their_account() -> None:
    vault = Vault(NEW)
    token = vault.seal("acme", "smtp", {"password": "hunter2-hunter2"})
    assert "hunter2" not in token and NEW not in token
    assert vault.open("acme", "smtp", token) == {"password": "hunter2-hunter2"}
    with pytest.raises(VaultError, match="another account"):
        vault.open("other-owner", "smtp", token)  # a token copied onto another row
    with pytest.raises(VaultError, match="another account"):
        vault.open("acme", "gmail", token)


def test_each_seal_differs() -> None:
    vault = Vault(NEW)
    assert vault.seal("a", "gmail", {"refresh_token": "x"}) != vault.seal(
        "a", "gmail", {"refresh_token": "x"}
    )


def test_previous_keys_still_open_and_rotation_moves_to_the_new_key() -> None:
    token = Vault(OLD).seal("acme", "gmail", {"refresh_token": "1//r"})
    rotating = Vault(NEW, [OLD])
    assert rotating.open("acme", "gmail", token) == {"refresh_token": "1//r"}
    assert not rotating.is_current(token)
    rotated = rotating.rotate(token)
    assert rotating.is_current(rotated)
    assert Vault(NEW).open("acme", "gmail", rotated) == {"refresh_token": "1//r"}
    with pytest.raises(VaultError, match="cannot be decrypted"):
        Vault(NEW).open("acme", "gmail", token)  # the old key is gone: the old token is dead


def test_unknown_key_is_a_clear_error_without_the_token() -> None:
    token = Vault(OLD).seal("acme", "smtp", {"password": "p"})
    with pytest.raises(VaultError) as info:
        Vault(NEW).open("acme", "smtp", token)
    assert token not in str(info.value)
    with pytest.raises(VaultError):
        Vault(NEW).rotate(token)


def test_derived_key_is_not_the_secret_key() -> None:
    key = derive_key(NEW)
    assert len(key) == 44 and NEW.encode() not in key
    assert derive_key(NEW) == key != derive_key(OLD)
