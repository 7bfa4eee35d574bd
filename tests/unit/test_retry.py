"""The retry policy table: backoff with jitter, the last delay repeating, giving up in time."""

from __future__ import annotations

import random

import pytest

from config.retry import RetryPolicy, next_retry
from config.settings import Settings
from config.units import parse_duration


def test_durations_parse() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("2m") == 120
    assert parse_duration("1h") == 3600
    assert parse_duration("4d") == 4 * 86400
    assert parse_duration("15") == 15
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_settings_read_comma_separated_lists() -> None:
    s = Settings(msc_retry_delays="30s,2m,10m", msc_relays="smtp://a:25, smtps://b:465")  # type: ignore[arg-type]
    assert s.msc_retry_delays == (30, 120, 600)
    assert s.msc_relays == ("smtp://a:25", "smtps://b:465")


def test_backoff_with_jitter_and_last_delay_repeats() -> None:
    policy = RetryPolicy(delays=(30, 120, 600), give_up_after=86400)
    rng = random.Random(1)
    delays = [next_retry(policy, attempt, age=0, rng=rng) for attempt in (1, 2, 3, 4, 5)]
    for got, base in zip(delays, (30, 120, 600, 600, 600), strict=True):
        assert got is not None and base * 0.8 <= got <= base * 1.2


def test_gives_up_when_the_next_attempt_would_be_too_late() -> None:
    policy = RetryPolicy(delays=(3600,), give_up_after=4 * 3600)
    assert next_retry(policy, 1, age=3600) is not None
    assert next_retry(policy, 4, age=3.5 * 3600) is None


def test_server_requested_delay_is_honoured() -> None:
    policy = RetryPolicy(delays=(30,), give_up_after=86400)
    got = next_retry(policy, 1, age=0, retry_after=900)
    assert got is not None and got >= 900


def test_secret_key_is_required() -> None:
    from config.settings import ConfigurationError

    with pytest.raises(ConfigurationError, match="MAILDISPATCH_SECRET_KEY"):
        Settings(secret_key=None).require_secret_key()
