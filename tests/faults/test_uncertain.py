"""The one window SMTP leaves open: the relay said 250 and the worker died before recording it.

A worker is killed (``kill -9``) while the relay holds every DATA reply, so each job it was sending
is left ``sending`` with nobody renewing its lease. ``MAILDISPATCH_ON_UNCERTAIN`` decides what
the reaper's republished copy does: ``resend`` (the default: a possible duplicate with the same
Message-ID, never a loss) or ``fail`` (a Failed Send, never a duplicate).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.faults.conftest import MakeFleet
from tests.support.faulty_relay import FaultyRelay
from tests.support.services import REPO, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]


def job(i: int) -> dict[str, object]:
    return {
        "owner": "acme",
        "identity": "Acme <news@acme.example>",
        "to": [f"reader{i}@example.org"],
        "subject": f"Issue {i}",
        "text": "Hello",
    }


@pytest.mark.parametrize("policy", ["resend", "fail"])
def test_a_job_caught_in_the_window_follows_the_policy(
    make_fleet: MakeFleet, faulty_relay: FaultyRelay, policy: str
) -> None:
    fleet = make_fleet(MAILDISPATCH_ON_UNCERTAIN=policy)
    fleet.scheduler()
    victim = fleet.worker(concurrency=1)
    d = fleet.dispatcher
    faulty_relay.handler.delay = 3.0  # the relay takes 3 s to answer DATA: the worker dies first
    ids = d.send_many([job(i) for i in range(5)])
    wait_for(lambda: fleet.in_state(ids, "sending") == 5, 20, 0.05, "all five sending")
    victim.kill9()
    faulty_relay.handler.delay = 0.0
    fleet.worker()
    states = fleet.wait_final(list(ids), 40)
    counts = faulty_relay.handler.by_message_id()
    if policy == "resend":
        # each arrives at least once; the copies a dead connection left behind share a Message-ID
        assert set(states.values()) == {"sent"}
        assert len(counts) == 5
        assert max(counts.values()) <= 2
    else:
        assert set(states.values()) == {"failed"}
        out = subprocess.run(
            [sys.executable, "-m", "producers.cli", "status", str(ids[0]), "--json"],
            env=fleet.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        failures = json.loads(out.stdout)["failed_sends"]
        assert [f["kind"] for f in failures] == ["expired"]
        assert "MAILDISPATCH_ON_UNCERTAIN=fail" in failures[0]["diagnostic"]
