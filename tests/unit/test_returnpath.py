"""Return-path tokens name the job and cannot be forged without the key."""

from __future__ import annotations

import uuid

from worker.message.returnpath import job_from_address, make_token, parse_token, return_path


def test_round_trip_and_case_insensitive() -> None:
    job_id = uuid.uuid4()
    address = return_path(job_id, "k1", "bounces.op.test")
    assert address.startswith("b+") and address.endswith("@bounces.op.test")
    assert len(address.split("@")[0]) <= 64  # RFC 5321 local-part limit
    assert job_from_address(address, ["k1"], "bounces.op.test") == job_id
    assert job_from_address(address.upper(), ["k1"], "BOUNCES.op.test") == job_id


def test_forged_or_foreign_tokens_are_refused() -> None:
    job_id = uuid.uuid4()
    token = make_token(job_id, "k1")
    assert job_from_address(f"b+{token}@bounces.op.test", ["other"], "bounces.op.test") is None
    tampered = ("a" if token[0] != "a" else "b") + token[1:]
    assert job_from_address(f"b+{tampered}@bounces.op.test", ["k1"], "bounces.op.test") is None
    assert job_from_address(f"b+{token}@elsewhere.test", ["k1"], "bounces.op.test") is None
    assert job_from_address("postmaster@bounces.op.test", ["k1"], "bounces.op.test") is None


def test_previous_key_still_verifies_after_rotation() -> None:
    job_id = uuid.uuid4()
    address = return_path(job_id, "old", "b.test")
    assert job_from_address(address, ["new", "old"], "b.test") == job_id


def test_a_token_names_its_recipient_only() -> None:
    from worker.message.returnpath import parse_token, token_from_address

    job_id = uuid.uuid4()
    a = return_path(job_id, "k1", "b.test", "Alice@Example.org")
    b = return_path(job_id, "k1", "b.test", "bob@example.org")
    assert a != b and len(a.split("@")[0]) <= 64
    token = token_from_address(a, ["k1"], "b.test")
    assert token is not None and token.job_id == job_id
    assert token.names("alice@example.org") and not token.names("bob@example.org")
    # the tag cannot be moved to another token: the MAC covers it
    ta, tb = a[2:].split("@")[0], b[2:].split("@")[0]
    assert parse_token(ta[:30] + tb[30:], ["k1"]) is None


def test_tokens_issued_before_recipients_were_bound_name_the_job_only() -> None:
    from worker.message.returnpath import parse_token

    job_id = uuid.uuid4()
    old = parse_token(make_token(job_id, "k1"), ["k1"])
    assert old is not None and old.job_id == job_id and old.recipient_tag is None
    assert not old.names("anyone@example.org")


def test_a_token_has_one_spelling_whatever_its_case() -> None:
    for recipient in ("bob@example.org", None):  # both token lengths
        token = make_token(uuid.uuid4(), "k1", recipient)
        alphabet = "abcdefghijklmnopqrstuvwxyz234567"  # base32 (RFC 4648), any case
        others = {token[:-1] + c for c in alphabet} - {token}
        assert parse_token(token, ["k1"]) and parse_token(token.upper(), ["k1"])
        assert [t for t in others if parse_token(t, ["k1"]) is not None] == []
