"""The plain-address fast path of SendJob validation agrees with email-validator on every input.

An address is kept in its ASCII form (an IDN domain as its A-label); a non-ASCII local part
is refused (it needs SMTPUTF8).
"""

from __future__ import annotations

import itertools
import random

import pytest
from email_validator import EmailNotValidError, validate_email

from producers.job import _check_address, _plain_address

LOCALS = [
    "bob",
    "Bob.Smith",
    "user+tag",
    "a_b-c",
    "Postmaster",
    "ABUSE",
    "x" * 64,
    "x" * 65,
    "x" * 200,
    ".bob",
    "bob.",
    "bo..b",
    "",
    "bob smith",
    '"bob"',
    "bøb",
    "bob!#$%&'*/=?^`{|}~",
    "a@b",
]
DOMAINS = [
    "example.org",
    "Example.COM",
    "sub.domain.example.co.uk",
    "xn--bcher-kva.example",
    "localhost",
    "foo.test",
    "x.invalid",
    "example.local",
    "1.2.3.4",
    "exa_mple.org",
    "-example.org",
    "example-.org",
    "example.org.",
    "a" * 63 + ".example",
    "a" * 64 + ".example",
    ".".join(["a" * 60] * 4) + ".com",
    "bücher.example",
    "[127.0.0.1]",
    "example",
]


def reference(address: str) -> str:
    """What the slow path alone says: email-validator's ASCII form, no SMTPUTF8 local part."""
    if not address.rpartition("@")[0].isascii():
        return (
            "error: not a valid email address: non-ASCII characters before the @ need SMTPUTF8, "
            "which maildispatch does not send"
        )
    try:
        checked = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        return f"error: not a valid email address: {exc}"
    assert checked.ascii_email is not None
    if len(checked.ascii_email) > 254:
        return "error: not a valid email address: longer than 254 as ASCII"
    return checked.ascii_email


def ours(address: str) -> str:
    try:
        return _check_address.__wrapped__(address)  # type: ignore[attr-defined]
    except ValueError as exc:
        return f"error: {exc}"


@pytest.mark.parametrize(("local", "domain"), list(itertools.product(LOCALS, DOMAINS)))
def test_same_verdict_as_email_validator(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    assert ours(address) == reference(address)


def test_random_plain_addresses_agree() -> None:
    rng = random.Random(7)
    alphabet = "abcXYZ019_+-."
    for _ in range(3000):
        local = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 70)))
        labels = ["".join(rng.choice("abz09-") for _ in range(rng.randint(1, 20)))]
        labels += [rng.choice(["org", "com", "example", "test", "x1", "io"])]
        address = f"{local}@{'.'.join(labels)}"
        assert ours(address) == reference(address), address


def test_the_fast_path_is_taken_for_plain_addresses() -> None:
    assert _plain_address("user123+tag@Example.org") == "user123+tag@example.org"
    assert _plain_address("Postmaster@example.org") == "postmaster@example.org"
    assert _plain_address("zoë@example.org") is None
