"""Validation bounds equal storage bounds.

Every length limit of the job schema (docs/sendjob.schema.json) is walked: a limited field is
either stored in database columns that hold its longest valid value, on SQLite and PostgreSQL
(read back from the database itself), or declared as not stored. The longest valid job is then
written as Failed Send rows and suppressions on both engines and read back unchanged. Finally a
Failed Send row that the database refuses, through a real worker, never makes an accepted message
go out again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from email_validator.rfc_constants import EMAIL_MAX_LENGTH
from sqlalchemy import inspect, text

from producers.client import Dispatcher
from producers.job import Channel, InvalidJob, parse_job
from producers.schema import sendjob_schema
from tests.support.fleet import running_fleet
from tests.support.relay import Relay
from tests.support.services import wait_for
from worker.store import repo
from worker.store.db import Store

UUID_LENGTH = 36
#: the longest address validation admits: a 64-character local part, a 189-character domain
LONGEST_ADDRESS = "l" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"
#: limited fields of the schema that reach no database column (they travel in the job's JSON)
NOT_STORED = {
    "idempotency_key": "Redis key only",
    "Attachment.filename": "in the stored job's JSON",
    "Attachment.content_type": "in the stored job's JSON",
    "headers": "in the stored job's JSON",
}


def _limits(schema: dict[str, Any]) -> dict[str, int]:
    """Every ``maxLength`` of the schema, by field (``Model.field`` inside a definition)."""
    found: dict[str, int] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "maxLength" in node:
                found[path] = node["maxLength"]
            for key, value in node.items():
                if key == "properties":
                    for name, sub in value.items():
                        walk(sub, f"{path}.{name}" if path else name)
                elif key == "additionalProperties" or key in ("anyOf", "allOf", "oneOf", "items"):
                    walk(value, path)
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk({k: v for k, v in schema.items() if k != "$defs"}, "")
    for name, definition in schema.get("$defs", {}).items():
        walk(definition, name)
    return found


LIMITS = _limits(sendjob_schema())


def stored_as() -> dict[str, tuple[int, list[tuple[str, str]]]]:
    """Each stored job field: the longest value validation admits, and the columns holding it."""
    name = LIMITS["Mailbox.name"]
    return {
        "id": (UUID_LENGTH, [("failed_sends", "job_id"), ("failed_sends", "resend_job_id")]),
        "id (contents)": (UUID_LENGTH, [("job_contents", "job_id")]),
        "id (suppression source)": (UUID_LENGTH, [("suppressions", "source_job_id")]),
        "owner": (
            LIMITS["owner"],
            [
                ("failed_sends", "owner"),
                ("job_contents", "owner"),
                ("suppressions", "owner"),
                ("api_keys", "owner"),
                ("accounts", "owner"),
                ("channel_preferences", "owner"),
            ],
        ),
        "channel": (
            max(len(c.value) for c in Channel),
            [("failed_sends", "channel"), ("accounts", "channel")],
        ),
        # str(Mailbox): "name <address>"
        "identity": (name + len(" <>") + EMAIL_MAX_LENGTH, [("failed_sends", "identity")]),
        "to/cc/bcc address": (
            EMAIL_MAX_LENGTH,
            [("failed_sends", "recipient"), ("suppressions", "address")],
        ),
        "subject": (LIMITS["subject"], [("failed_sends", "subject")]),
    }


def test_every_limit_of_the_schema_is_known() -> None:
    stored = {"owner", "subject", "Mailbox.name"}  # Mailbox.name is part of "identity"
    assert set(LIMITS) == stored | set(NOT_STORED), (
        "a length limit was added to the job schema: say where it is stored (stored_as) "
        "or why it is not (NOT_STORED)"
    )


def test_every_limit_fits_its_columns(store: Store) -> None:
    inspector = inspect(store.engine)
    columns = {
        (table, c["name"]): getattr(c["type"], "length", None)
        for table in inspector.get_table_names()
        for c in inspector.get_columns(table)
    }
    for field, (longest, where) in stored_as().items():
        for column in where:
            assert column in columns, f"{field}: no column {column}"
            length = columns[column]
            assert length is None or length >= longest, (
                f"{field} may be {longest} characters; {column} holds {length}"
            )


def longest_job(**overrides: Any) -> dict[str, Any]:
    return {
        "owner": "o" * LIMITS["owner"],
        "identity": {"name": "N" * LIMITS["Mailbox.name"], "address": LONGEST_ADDRESS},
        "to": [LONGEST_ADDRESS],
        "subject": "S" * LIMITS["subject"],
        "text": "Hello",
    } | overrides


def test_the_limits_are_the_validators(store: Store) -> None:
    """Each limit is what validation enforces: the longest passes, one more is refused."""
    job = parse_job(longest_job())
    assert len(str(job.identity)) == LIMITS["Mailbox.name"] + 3 + EMAIL_MAX_LENGTH == 457
    assert job.to[0].address == LONGEST_ADDRESS and len(LONGEST_ADDRESS) == EMAIL_MAX_LENGTH
    for field, value in (
        ("owner", "o" * (LIMITS["owner"] + 1)),
        ("subject", "S" * (LIMITS["subject"] + 1)),
        ("identity", {"name": "N" * (LIMITS["Mailbox.name"] + 1), "address": "a@example.com"}),
        ("to", ["l" + LONGEST_ADDRESS]),
    ):
        with pytest.raises(InvalidJob) as refused:
            parse_job(longest_job(**{field: value}))
        assert refused.value.errors[0].field.startswith(field)


def test_the_longest_valid_job_is_stored_unchanged(store: Store) -> None:
    job = parse_job(longest_job(metadata={"k": "v" * 4000}))
    row = {
        "job_id": str(job.id),
        "owner": job.owner,
        "channel": "msc",
        "recipient": job.recipients[0],
        "kind": "rejected",
        "reason": "userunknown",
        "hard": True,
        "diagnostic": "x" * 2000,
        "subject": job.subject,
        "identity": str(job.identity),
        "job_metadata": job.metadata,
        "job": job.model_dump(mode="json"),
    }
    with store.session() as s:
        repo.record_failed_sends(s, [row])
        repo.suppress(s, job.owner, job.recipients, "userunknown", str(job.id))
    with store.session() as s:
        (got,) = repo.failed_sends_for_job(s, str(job.id))
        assert (got.owner, got.recipient, got.subject, got.identity) == (
            row["owner"],
            row["recipient"],
            row["subject"],
            row["identity"],
        )
        assert repo.job_content(s, str(job.id), job.owner) == row["job"]
        assert repo.suppressed(s, job.owner, job.recipients) == {LONGEST_ADDRESS: "userunknown"}


def test_text_from_outside_is_fitted_to_its_columns(store: Store) -> None:
    """What a server or a bounce says is not validated: it is cut to fit, and NUL dropped."""
    row = {
        "job_id": "job-odd",
        "owner": "o1",
        "channel": "msc",
        "recipient": "bob@example.org",
        "kind": "rejected",
        "enhanced_status": "5.1.1" * 10,
        "reason": "r" * 500,
        "hard": True,
        "diagnostic": "550 no\x00such user",
        "subject": "Hi",
        "identity": "A <a@example.com>",
        "job_metadata": {},
    }
    with store.session() as s:
        repo.record_failed_sends(s, [row])
    with store.session() as s:
        (got,) = repo.failed_sends_for_job(s, "job-odd")
        assert got.diagnostic == "550 nosuch user"
        assert got.reason == "r" * 200 and got.enhanced_status == ("5.1.1" * 10)[:16]


# -- through a real worker -----------------------------------------------------------------
@pytest.fixture
def refusing_store(store: Store, request: pytest.FixtureRequest) -> Iterator[Store]:
    """The store, where the database itself refuses Failed Send rows for ``reject-boom-*``."""
    sqlstate = getattr(request, "param", "P0001")
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER boom BEFORE INSERT ON failed_sends "
                    "WHEN NEW.recipient LIKE 'reject-boom%' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.recipient LIKE 'reject-boom%' THEN "
                    f"RAISE EXCEPTION 'refused by the test' USING ERRCODE = '{sqlstate}'; "
                    "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER boom BEFORE INSERT ON failed_sends "
                    "FOR EACH ROW EXECUTE FUNCTION boom()"
                )
            )
    yield store


def _deliver_once(store: Store, relay: Relay, tmp_path: Path) -> None:
    relay.handler.reset()
    with running_fleet(tmp_path, relay_url=relay.url, database_url=store.url) as fleet:
        d = Dispatcher(fleet.settings)
        job_id = d.send(
            longest_job(
                to=["ok@example.org", "reject-boom@example.org", "reject-plain@example.org"],
                subject="Partly refused",
            )
        )

        def final() -> bool:
            return (d.status(job_id) or {}).get("state") in ("sent", "failed")

        wait_for(final, 60, 0.1, "the job's outcome")
        state = d.status(job_id) or {}
        assert state["state"] == "sent"
        # the row the store refused is kept on the job's state, with its error
        (unrecorded,) = json.loads(state["unrecorded_failures"])
        assert unrecorded.startswith("reject-boom@example.org: ") and "5.1.1" in unrecorded
        assert state["last_error"] == f"not in Failed Sends: {unrecorded}"
        time.sleep(3)  # longer than the retry delays (0.3 s, 0.6 s): a retry would be here
        assert relay.handler.by_message_id() == {f"<{job_id}@mail.operator.test>": 1}
        (received,) = relay.handler.messages
        assert received.rcpt_tos == ["ok@example.org"]
        with store.session() as s:
            rows = {r.recipient: r for r in repo.failed_sends_for_job(s, str(job_id))}
        # the row the database took is there, with the 457-character identity
        assert set(rows) == {"reject-plain@example.org"}
        assert len(rows["reject-plain@example.org"].identity) == 457
        assert "failed_send_not_recorded" in fleet.logs()
        d.close()


def test_a_row_the_database_refuses_never_resends_an_accepted_message(
    refusing_store: Store, relay: Relay, tmp_path: Path
) -> None:
    _deliver_once(refusing_store, relay, tmp_path)


@pytest.mark.parametrize("refusing_store", ["08006"], indirect=True)
def test_a_store_outage_after_the_250_never_resends_it(
    refusing_store: Store, relay: Relay, tmp_path: Path
) -> None:
    """A connection error (SQLSTATE 08006) is retried a few times, then logged: still sent once."""
    if refusing_store.engine.dialect.name != "postgresql":
        pytest.skip("an SQLSTATE is a PostgreSQL error; SQLite's trigger has one kind")
    _deliver_once(refusing_store, relay, tmp_path)


def test_a_suppression_from_outside_text_never_fails_the_write(store: Store) -> None:
    with store.session() as s:
        repo.suppress(s, "o1", ["x" * 400 + "@example.org", "gone@example.org"], "r" * 300)
    with store.session() as s:
        (only,) = repo.list_suppressions(s, "o1")
        assert (only.address, only.reason) == ("gone@example.org", "r" * 200)
