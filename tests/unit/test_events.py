"""Events as the feed and webhooks carry them (config/events.py, worker/jobs/events.py)."""

from __future__ import annotations

import json
import uuid

from config.events import EVENT_TYPES, EventType, event_id, min_id, rfc3339
from producers.job import parse_job
from worker.errors import PermanentError, TransientError
from worker.jobs import events


def job() -> object:
    return parse_job(
        {
            "id": str(uuid.UUID(int=7)),
            "owner": "acct-1",
            "identity": "Ann <ann@acme.example>",
            "to": ["a@example.org", "b@example.org"],
            "subject": "Hi",
            "text": "Hello",
            "metadata": {"order": 7},
        }
    )


def test_the_types_are_the_contracts() -> None:
    assert EVENT_TYPES == (
        "message.sent",
        "message.deferred",
        "message.retrying",
        "message.failed",
        "message.bounced",
        "message.complained",
        "message.unsubscribed",
        "message.cancelled",
    )


def test_the_same_outcome_is_the_same_event() -> None:
    one = event_id("job-1", "message.sent", "a@example.org")
    assert one == event_id("job-1", "message.sent", "a@example.org")
    assert one.startswith("evt_") and len(one) == 4 + 24
    others = {
        event_id("job-2", "message.sent", "a@example.org"),
        event_id("job-1", "message.failed", "a@example.org"),
        event_id("job-1", "message.sent", "b@example.org"),
        event_id("job-1", "message.sent", "a@example.org", 2),
    }
    assert one not in others and len(others) == 4
    # parts are separated: ("ab", "c") is not ("a", "bc")
    assert event_id("j", "t", "ab", "c") != event_id("j", "t", "a", "bc")


def test_an_event_carries_the_job_and_what_happened() -> None:
    owner, body = events.failed(
        job(),  # type: ignore[arg-type]
        "msc",
        ["b@example.org"],
        PermanentError("550 5.1.1 no such user", reply_code=550, enhanced_status="5.1.1"),
        "userunknown",
        True,
    )
    event = json.loads(body)
    assert owner == "acct-1" and event["type"] == EventType.FAILED
    assert event["data"] == {
        "job_id": str(uuid.UUID(int=7)),
        "owner": "acct-1",
        "channel": "msc",
        "recipients": ["b@example.org"],
        "metadata": {"order": 7},
        "kind": "rejected",
        "reason": "userunknown",
        "hard": True,
        "reply_code": 550,
        "enhanced_status": "5.1.1",
        "diagnostic": "550 5.1.1 no such user",
    }
    # written again (a worker died between the row and the state): the same id
    again = json.loads(
        events.failed(
            job(),
            "msc",
            ["b@example.org"],
            PermanentError("550 5.1.1 no such user", reply_code=550, enhanced_status="5.1.1"),
            "userunknown",
            True,
        )[1]
    )  # type: ignore[arg-type]
    assert again["id"] == event["id"]
    retry = json.loads(
        events.retrying(job(), "msc", ["a@example.org"], 2, 0.0, TransientError("451 busy"))[1]
    )  # type: ignore[arg-type]
    assert retry["data"]["attempt"] == 2
    assert retry["data"]["next_attempt_at"] == "1970-01-01T00:00:00.000Z"


def test_times_and_trimming() -> None:
    assert rfc3339(1.5) == "1970-01-01T00:00:01.500Z"
    assert min_id(10.0, now=100.0) == "90000"


def test_the_checked_in_schema_describes_the_events() -> None:
    from pathlib import Path

    from worker.bounces.classify.model import Bounce

    schema = json.loads((Path(__file__).parents[2] / "docs" / "events.schema.json").read_text())
    assert schema["properties"]["type"]["enum"] == list(EVENT_TYPES)
    declared = set(schema["properties"]["data"]["properties"])
    j = job()
    built = [
        events.sent(j, "msc", ["a@example.org"], 1, {"reply": "250 ok"}),  # type: ignore[arg-type]
        events.failed(j, "msc", ["a@example.org"], PermanentError("550 no"), "userunknown", True),  # type: ignore[arg-type]
        events.retrying(j, "msc", ["a@example.org"], 1, 0.0, TransientError("451 later")),  # type: ignore[arg-type]
        events.deferred(j, "msc", ["a@example.org"], 0.0, "domain:example.org"),  # type: ignore[arg-type]
        events.bounced(
            "j",
            "o",
            "msc",
            {},
            "a@example.org",
            Bounce("a@example.org", "failed", "5.1.1", "550", "userunknown", True, "550 no"),
            True,
        ),
        events.complained("j", "o", "msc", {}, "a@example.org", "abuse"),
    ]
    for _, body in built:
        event = json.loads(body)
        assert set(event) == set(schema["required"])
        assert set(schema["properties"]["data"]["required"]) <= set(event["data"])
        assert set(event["data"]) <= declared, set(event["data"]) - declared
