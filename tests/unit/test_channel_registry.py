"""The channel table and the policy each channel class carries (config/channels.py)."""

from __future__ import annotations

import pytest

from config.celery import DELIVER_TASK, QUEUE
from config.channels import CHANNEL_SPECS, CHANNELS, OWNER_ACCOUNT
from config.settings import Settings
from producers.job import Channel, parse_job
from producers.wire import batch_key
from worker.channels.registry import channel_class, pacing_for, policy_for

SECRET = "test-secret-key-0123456789abcdef"


def test_every_channel_of_the_table_has_its_class_queue_task_and_job_value() -> None:
    assert CHANNELS == ("msc", "gmail", "smtp")
    for spec in CHANNEL_SPECS:
        assert channel_class(spec.name).name == spec.name
        assert QUEUE[spec.name] == f"mail.{spec.name}"
        assert DELIVER_TASK[spec.name] == f"maildispatch.deliver.{spec.name}"
        assert Channel(spec.name).value == spec.name
    assert [c.value for c in Channel] == list(CHANNELS)
    # only the operator's relays own the return path; the others send as the owner's account
    assert [n for n in CHANNELS if channel_class(n).owns_return_path] == ["msc"]
    assert OWNER_ACCOUNT == ("gmail", "smtp")
    assert batch_key("msc", "acme") == ("msc", "") and batch_key("smtp", "acme") == ("smtp", "acme")


def test_an_unknown_channel_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown channel 'fax'; known: msc, gmail, smtp"):
        channel_class("fax")
    with pytest.raises(ValueError):
        parse_job(
            {
                "owner": "a",
                "identity": "a@b.example",
                "to": ["c@d.example"],
                "subject": "s",
                "text": "t",
                "channel": "fax",
            }
        )


def test_each_channel_reads_its_own_retry_policy() -> None:
    settings = Settings(
        secret_key=SECRET,
        msc_retry_delays="1s,2s",  # type: ignore[arg-type]
        gmail_retry_delays="3s",  # type: ignore[arg-type]
        smtp_retry_delays="4s,5s,6s",  # type: ignore[arg-type]
        smtp_give_up_after="1h",  # type: ignore[arg-type]
    )
    assert policy_for(settings, "msc").delays == (1.0, 2.0)
    assert policy_for(settings, "gmail").delays == (3.0,)
    assert policy_for(settings, "smtp").delays == (4.0, 5.0, 6.0)
    assert policy_for(settings, "smtp").give_up_after == 3600.0


def test_pacing_scopes_are_the_channels_own_and_absent_when_unlimited() -> None:
    bare = Settings(secret_key=SECRET, gmail_limits=[])  # type: ignore[arg-type]
    assert pacing_for(bare, "msc") is None and pacing_for(bare, "smtp") is None
    assert pacing_for(bare, "gmail") is None
    limited = Settings(
        secret_key=SECRET,
        msc_domain_limits=["gmail.com=50/s"],  # type: ignore[arg-type]
        smtp_limits=["10/s"],  # type: ignore[arg-type]
    )
    job = parse_job(
        {
            "owner": "acme",
            "identity": "a@acme.example",
            "to": ["x@gmail.com"],
            "subject": "s",
            "text": "t",
        }
    )
    msc = pacing_for(limited, "msc")
    assert msc is not None
    assert [s for s, _ in msc(job, None, ["x@gmail.com", "y@yahoo.com", "z@GMAIL.com"])] == [
        "domain:gmail.com"
    ]
    smtp = pacing_for(limited, "smtp")
    assert smtp is not None
    assert [s for s, _ in smtp(job, None, ["x@gmail.com"])] == ["smtp:acme"]
