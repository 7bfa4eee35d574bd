"""The Failed Sends store on both engines: migrations, idempotent rows, pagination, suppressions."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from sqlalchemy import inspect, text

from worker.store import repo
from worker.store.db import Store


def row(
    job_id: str, recipient: str, owner: str = "o1", kind: str = "rejected"
) -> dict[str, object]:
    return {
        "job_id": job_id,
        "owner": owner,
        "channel": "msc",
        "recipient": recipient,
        "kind": kind,
        "reply_code": 550,
        "enhanced_status": "5.1.1",
        "reason": "userunknown",
        "hard": True,
        "diagnostic": "User unknown",
        "subject": "Hi",
        "identity": "A <a@example.com>",
        "job_metadata": {"conversation": 7},
        "job": {"id": job_id},
    }


def test_rows_are_recorded_once_and_listed_newest_first(store: Store) -> None:
    with store.session() as s:
        for i in range(5):
            repo.record_failed_sends(s, [row(f"job-{i}", f"r{i}@example.org")])
        repo.record_failed_sends(s, [row("job-0", "r0@example.org")])  # a redelivered record
        repo.record_failed_sends(s, [row("job-x", "x@example.org", owner="o2")])
    with store.session() as s:
        page = repo.list_failed_sends(s, "o1", limit=3)
        assert [f.job_id for f in page.items] == ["job-4", "job-3", "job-2"]
        assert page.next_cursor is not None
        rest = repo.list_failed_sends(s, "o1", cursor=page.next_cursor, limit=3)
        assert [f.job_id for f in rest.items] == ["job-1", "job-0"]
        assert rest.next_cursor is None
        assert rest.items[0].job_metadata == {"conversation": 7}
        assert rest.items[0].created_at is not None
        repo.record_failed_sends(s, [row("job-5", "Mixed.Case@Example.org")])
        found = repo.list_failed_sends(s, "o1", recipient="mixed.case@example.ORG")
        assert [f.job_id for f in found.items] == ["job-5"]
        assert repo.list_failed_sends(s, "o2", recipient="r1@example.org").items == []


def test_suppressions_per_owner_and_operator_wide(store: Store) -> None:
    with store.session() as s:
        repo.suppress(s, "o1", ["Gone@Example.org"], "userunknown", "job-1")
        repo.suppress(s, "o1", ["gone@example.org"], "userunknown", "job-2")
        repo.suppress(s, repo.OPERATOR, ["spamtrap@example.net"], "complaint")
    with store.session() as s:
        found = repo.suppressed(
            s, "o1", ["gone@example.org", "ok@example.org", "spamtrap@example.net"]
        )
        assert set(found) == {"gone@example.org", "spamtrap@example.net"}
        assert repo.suppressed(s, "o2", ["gone@example.org"]) == {}
        assert repo.unsuppress(s, "o1", "gone@example.org") == 1
    with store.session() as s:
        assert repo.suppressed(s, "o1", ["gone@example.org"]) == {}


@contextlib.contextmanager
def _expression_indexes_unreflected() -> Iterator[None]:
    """SQLAlchemy cannot reflect expression indexes (lower(recipient)) and warns; Alembic then
    leaves them out of the comparison."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression")
        yield


def _schema(store: Store) -> dict[str, Any]:
    """Tables, their columns, indexes and the Alembic revision, as the database reports them."""
    with _expression_indexes_unreflected():
        inspector = inspect(store.engine)
        with store.engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        return {
            "revision": revision,
            "tables": {
                table: (
                    sorted(c["name"] for c in inspector.get_columns(table)),
                    sorted(str(i["name"]) for i in inspector.get_indexes(table)),
                )
                for table in inspector.get_table_names()
            },
        }


def test_upgrade_is_idempotent(store: Store) -> None:
    from worker.store.db import upgrade

    with store.session() as s:
        repo.suppress(s, "o1", ["kept@example.org"], "userunknown", "job-1")
    before = _schema(store)
    upgrade(store.engine)
    upgrade(store.engine)
    assert _schema(store) == before  # nothing created, dropped or re-stamped
    assert "failed_sends" in before["tables"]
    with store.session() as s:  # and nothing lost
        assert set(repo.suppressed(s, "o1", ["kept@example.org"])) == {"kept@example.org"}


def test_the_migrations_make_the_models_schema(store: Store) -> None:
    # what Alembic's autogenerate would write next: nothing, if the migrations are complete
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from worker.store.models import Base

    with store.engine.connect() as conn, _expression_indexes_unreflected():
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
