"""SendJob validation: bad input is refused with the field named, before anything is enqueued."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest

from producers.job import Channel, InvalidJob, SendJob, parse_job


def job(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "owner": "user-1",
        "identity": "Ann Example <ann@example.com>",
        "to": ["bob@example.org"],
        "subject": "Hello",
        "text": "Hi Bob",
    }
    return base | overrides


def errors_of(data: dict[str, object]) -> dict[str, str]:
    with pytest.raises(InvalidJob) as info:
        parse_job(data)
    return {e.field: e.message for e in info.value.errors}


def test_valid_job_parses_identity_and_defaults() -> None:
    parsed = parse_job(job(cc=["Carol <carol@example.net>"]))
    assert parsed.identity.name == "Ann Example"
    assert parsed.identity.address == "ann@example.com"
    assert parsed.cc[0].name == "Carol"
    assert parsed.channel is None
    assert parsed.recipients == ("bob@example.org", "carol@example.net")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.com"}, "subject"),
        ({"subject": "Hi\nX-Injected: 1"}, "subject"),
        ({"headers": {"X-Campaign": "a\r\nBcc: x@example.com"}}, "headers"),
        ({"headers": {"Bad Name": "v"}}, "headers"),
        ({"headers": {"Bcc": "x@example.com"}}, "headers"),
        ({"identity": "Ann\r\nBcc: x@example.com <ann@example.com>"}, "identity"),
        ({"to": ["not-an-address"]}, "to.0"),
        ({"to": ["bob@exa mple.org"]}, "to.0"),
        ({"to": ["bob@example.org\r\nRCPT TO:<x@y.z>"]}, "to.0"),
        ({"cc": ["@example.org"]}, "cc.0"),
        ({"reply_to": "nobody"}, "reply_to"),
        ({"channel": "carrier-pigeon"}, "channel"),
        ({"to": []}, "to"),
        ({"text": None}, "text"),
        ({"owner": ""}, "owner"),
        ({"owner": "a\x00b"}, "owner"),
        (
            {"attachments": [{"filename": "a.bin", "content": "%%%not base64"}]},
            "attachments.0.content",
        ),
        ({"unknown_field": 1}, "unknown_field"),
        ({"send_at": "2030-01-01T00:00:00"}, "send_at"),
        ({"metadata": {"notes": "x" * 9000}}, "metadata"),
        ({"metadata": {"amount": Decimal("9.90")}}, "metadata"),
        # a byte that did not decode (surrogateescape): not text UTF-8 can carry
        ({"text": "caf\udce9"}, "text"),
        ({"html": "<p>caf\udce9</p>"}, "html"),
        (
            {"headers": {"References": "<a@example.com>", "references": "<b@example.com>"}},
            "headers",
        ),
        (
            {
                "attachments": [
                    {"filename": "a", "content_type": "multipart/mixed", "content": "eA=="}
                ]
            },
            "attachments.0.content_type",
        ),
        (
            {
                "attachments": [
                    {"filename": "a", "content_type": "Message/RFC822", "content": "eA=="}
                ]
            },
            "attachments.0.content_type",
        ),
    ],
)
def test_invalid_input_names_the_field(overrides: dict[str, object], field: str) -> None:
    errors = errors_of(job(**overrides))
    assert any(f == field or f.startswith(field) for f in errors), errors


def test_missing_body_is_refused() -> None:
    data = job()
    del data["text"]
    assert "text" in errors_of(data)


def test_html_only_is_a_body() -> None:
    data = job(html="<p>hi</p>")
    del data["text"]
    assert parse_job(data).html == "<p>hi</p>"


def test_attachment_total_size_is_capped() -> None:
    big = base64.b64encode(b"x" * (26 * 1024 * 1024)).decode()
    assert "attachments" in errors_of(job(attachments=[{"filename": "big.bin", "content": big}]))


def test_metadata_up_to_8_kb_is_accepted() -> None:
    assert parse_job(job(metadata={"notes": "x" * 8000})).metadata["notes"] == "x" * 8000


def test_round_trips_as_json() -> None:
    parsed = parse_job(job(channel="msc", metadata={"conversation": 42}))
    again = SendJob.model_validate_json(parsed.model_dump_json())
    assert again == parsed
    assert again.channel is Channel.MSC
    assert json.loads(parsed.model_dump_json())["metadata"] == {"conversation": 42}


def test_schema_document_is_current() -> None:
    from pathlib import Path

    from producers.schema import sendjob_schema

    path = Path(__file__).resolve().parents[2] / "docs" / "sendjob.schema.json"
    assert json.loads(path.read_text()) == sendjob_schema(), "run `make schema` and commit docs/"


def test_a_repeated_identity_parses_as_the_first_time() -> None:
    first = parse_job(job(identity="Ann Example <ann@EXAMPLE.com>"))
    again = parse_job(
        job(identity="Ann Example <ann@EXAMPLE.com>", reply_to="Ann Example <ann@EXAMPLE.com>")
    )
    assert again.identity == first.identity == again.reply_to
    assert (again.identity.name, again.identity.address) == ("Ann Example", "ann@example.com")
    # a bad identity is refused every time, with the field inside the mailbox named
    for _ in range(2):
        assert "identity.address" in errors_of(job(identity="Ann <not-an-address>"))
