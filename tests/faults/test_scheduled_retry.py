"""A scheduled job is retried and dated from its send_at, not from when it was enqueued.

The wait for a ``send_at`` is not time spent trying: a job scheduled further ahead than its
channel's give-up time still gets its retries when a relay answers 4xx at send time, and its
``Date:`` is when it was sent (RFC 5322 §3.6.1), the same on every attempt.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest

from tests.faults.conftest import MakeFleet
from tests.support.faulty_relay import FaultyRelay

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


def test_a_scheduled_job_is_retried_and_dated_from_its_send_at(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay
) -> None:
    fleet = make_fleet(
        MAILDISPATCH_MSC_RETRY_DELAYS="1s",
        MAILDISPATCH_MSC_GIVE_UP_AFTER="10s",
    )
    fleet.scheduler()
    fleet.worker()
    due = datetime.now(UTC) + timedelta(seconds=12)  # beyond the give-up time
    job = {
        "owner": "acme",
        "identity": "Acme <news@acme.example>",
        "to": ["later2-grey@example.org"],  # greylisted at its first attempt, for 2 s
        "subject": "Later",
        "text": "Hello",
        "send_at": due.isoformat(),
    }
    job_id = str(fleet.dispatcher.send(job))
    assert fleet.wait_final([job_id], 60) == {job_id: "sent"}, fleet.logs(tail=2000)
    assert int(fleet.status(job_id)["attempts"]) >= 2  # it was greylisted, then retried
    (received,) = faulty_relay.handler.messages
    date = parsedate_to_datetime(received.message["Date"])
    assert due - timedelta(seconds=1) <= date <= datetime.now(UTC), received.message["Date"]
