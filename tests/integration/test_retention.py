"""Failed Sends cannot fill the database: a job's content is kept once, and purged by retention.

On both engines: the content of a job refused for many recipients is stored once, the retention
purge deletes old rows and contents (and contents no row refers to), the migration moves the
contents of existing rows, and ``maildispatch failed purge`` runs the purge from the command line.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

from sqlalchemy import func, inspect, select, text

from tests.support.env import worker_env
from tests.support.services import REPO, background, scheduler_args, wait_for
from worker.store import repo
from worker.store.db import Store, upgrade
from worker.store.models import FailedSend, JobContent, utcnow
from worker.store.retention import purge

MIB = 1024 * 1024


def wire(job_id: str, attachment: bytes = b"") -> dict[str, Any]:
    job: dict[str, Any] = {
        "id": job_id,
        "owner": "o1",
        "channel": "msc",
        "identity": "A <a@example.com>",
        "to": [f"r{i}@example.org" for i in range(100)],
        "subject": "Hi",
        "text": "Body",
    }
    if attachment:
        content = base64.b64encode(attachment).decode()
        job["attachments"] = [{"filename": "big.bin", "content": content}]
    return job


def rows(job_id: str, count: int, job: dict[str, Any] | None, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "job_id": job_id,
            "owner": "o1",
            "channel": "msc",
            "recipient": f"r{i}@example.org",
            "kind": "suppressed",
            "reason": "suppressed",
            "hard": True,
            "diagnostic": "recipient is on the suppression list",
            "subject": "Hi",
            "identity": "A <a@example.com>",
            "job_metadata": {},
            "job": job,
            **extra,
        }
        for i in range(count)
    ]


def stored_bytes(store: Store) -> int:
    """What the Failed Sends tables take on disk (the whole file for SQLite)."""
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "postgresql":
            query = "SELECT pg_total_relation_size('failed_sends') + pg_total_relation_size('job_contents')"
            return int(conn.execute(text(query)).scalar_one())
        conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    path = store.engine.url.database or ""
    return os.path.getsize(path)


def test_a_job_refused_for_100_recipients_is_stored_once(store: Store) -> None:
    job = wire("job-big", os.urandom(2 * MIB))
    with store.session() as s:
        repo.record_failed_sends(s, rows("job-big", 100, job))
        # the same job failing again later (another kind) adds rows, not another copy
        repo.record_failed_sends(s, rows("job-big", 3, job, kind="expired"))
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(FailedSend)) == 103
        assert s.scalar(select(func.count()).select_from(JobContent)) == 1
        assert repo.job_content(s, "job-big", "o1") == job
        assert repo.kept_jobs(s, "o1", ["job-big", "job-other"]) == {"job-big"}
        # another owner's job that was given the same id later sees none of it (nor can resend it)
        assert repo.job_content(s, "job-big", "o2") is None
        assert repo.kept_jobs(s, "o2", ["job-big"]) == set()
    # once per recipient, this was 100 copies of ~2.7 MB of base64: ~270 MB
    assert stored_bytes(store) < 8 * MIB
    columns = {c["name"] for c in inspect(store.engine).get_columns("failed_sends")}
    assert "job" not in columns


def test_a_row_without_a_job_keeps_no_content(store: Store) -> None:
    with store.session() as s:
        repo.record_failed_sends(s, rows("job-bounce", 2, None, kind="bounced"))
    with store.session() as s:
        assert repo.job_content(s, "job-bounce", "o1") is None
        assert s.scalar(select(func.count()).select_from(FailedSend)) == 2


def _age(store: Store, job_id: str, days: float) -> None:
    when = utcnow() - timedelta(days=days)
    with store.session() as s:
        s.query(FailedSend).filter(FailedSend.job_id == job_id).update({"created_at": when})
        s.query(JobContent).filter(JobContent.job_id == job_id).update({"created_at": when})


def test_purge_keeps_what_is_within_retention(store: Store) -> None:
    with store.session() as s:
        for job_id in ("old", "middle", "new"):
            repo.record_failed_sends(s, rows(job_id, 2, wire(job_id)))
    _age(store, "old", 100)  # past both retentions
    _age(store, "middle", 40)  # rows kept (90 days), content past its 30 days
    purged = purge(store, failed_days=90, content_days=30)
    assert purged.as_dict() == {"failed_sends": 2, "job_contents": 2, "messages": 0}
    with store.session() as s:
        left = sorted(set(s.scalars(select(FailedSend.job_id))))
        assert left == ["middle", "new"]
        assert repo.kept_jobs(s, "o1", ["old", "middle", "new"]) == {"new"}
    # again: nothing more to do
    assert purge(store, failed_days=90, content_days=30).as_dict() == {
        "failed_sends": 0,
        "job_contents": 0,
        "messages": 0,
    }
    # 0 days: kept for ever, whatever their age
    _age(store, "new", 10_000)
    assert purge(store, failed_days=0, content_days=0).as_dict() == {
        "failed_sends": 0,
        "job_contents": 0,
        "messages": 0,
    }


def test_purge_deletes_in_chunks(store: Store, monkeypatch: Any) -> None:
    from worker.store import retention

    monkeypatch.setattr(retention, "CHUNK", 7)  # the size of a transaction, not a behaviour
    with store.session() as s:
        for n in range(5):
            repo.record_failed_sends(s, rows(f"job-{n}", 5, wire(f"job-{n}")))
    for n in range(5):
        _age(store, f"job-{n}", 365)
    assert purge(store, failed_days=30, content_days=0).as_dict() == {
        "failed_sends": 25,
        "job_contents": 5,
        "messages": 0,
    }


def test_migration_moves_each_jobs_content_once(blank_store: Store) -> None:
    store = blank_store
    upgrade(store.engine, "0006")
    big = wire("job-1", os.urandom(1000))
    with store.engine.begin() as conn:
        for job_id, recipient, job in (
            ("job-1", "a@example.org", big),
            ("job-1", "b@example.org", big),
            ("job-2", "c@example.org", None),  # a bounce: JSON null
        ):
            conn.execute(
                text(
                    "INSERT INTO failed_sends (job_id, owner, channel, recipient, kind, reason, "
                    "hard, diagnostic, subject, identity, created_at, job_metadata, job) VALUES "
                    "(:job_id, 'o1', 'msc', :recipient, 'rejected', 'r', true, '', 's', 'i', "
                    ":now, '{}', :job)"
                ),
                {"job_id": job_id, "recipient": recipient, "now": utcnow(), "job": json.dumps(job)},
            )
    upgrade(store.engine)
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(FailedSend)) == 3
        assert repo.job_content(s, "job-1", "o1") == big
        assert repo.job_content(s, "job-2", "o1") is None
        assert s.scalar(select(func.count()).select_from(JobContent)) == 1
        # the table kept its indexes and its one-row-per-(job, recipient, kind) constraint
        again = rows("job-1", 1, big, kind="rejected", recipient="a@example.org")
        repo.record_failed_sends(s, again)
        assert s.scalar(select(func.count()).select_from(FailedSend)) == 3
    upgrade(store.engine)  # idempotent
    assert {
        "ix_failed_sends_owner_recipient",
        "ix_failed_sends_job_id",
        "ix_failed_sends_owner",
        "ix_failed_sends_created_at",
    } <= index_names(store)


def index_names(store: Store) -> set[str]:
    query = (
        "SELECT indexname FROM pg_indexes WHERE tablename = 'failed_sends'"
        if store.engine.dialect.name == "postgresql"
        else "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'failed_sends'"
    )
    with store.engine.connect() as conn:
        return set(conn.execute(text(query)).scalars())


def test_failed_purge_command(store: Store) -> None:
    with store.session() as s:
        repo.record_failed_sends(s, rows("old", 3, wire("old")))
        repo.record_failed_sends(s, rows("new", 1, wire("new")))
    _age(store, "old", 31)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    env |= {
        "MAILDISPATCH_DATABASE_URL": store.url,
        "MAILDISPATCH_FAILED_SEND_RETENTION_DAYS": "30",
    }
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "failed", "purge", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"failed_sends": 3, "job_contents": 1, "messages": 0}
    with store.session() as s:
        assert set(s.scalars(select(FailedSend.job_id))) == {"new"}


def test_the_scheduler_purges_on_its_own(
    store: Store, redis_client: Any, redis_url: str, tmp_path: Any
) -> None:
    with store.session() as s:
        repo.record_failed_sends(s, rows("old", 2, wire("old")))
        repo.record_failed_sends(s, rows("new", 1, wire("new")))
    _age(store, "old", 8)
    env = worker_env(redis_url, store.url, "smtp://127.0.0.1:9")
    env |= {
        "MAILDISPATCH_FAILED_SEND_RETENTION_DAYS": "7",
        "MAILDISPATCH_PURGE_INTERVAL": "1s",
    }

    def left() -> set[str]:
        with store.session() as s:
            return set(s.scalars(select(FailedSend.job_id)))

    log = tmp_path / "scheduler.log"
    with background(scheduler_args(), env, log):
        wait_for(lambda: left() == {"new"}, 60, 0.2, "the scheduler's purge")
        wait_for(lambda: b"retention_purged" in log.read_bytes(), 30, 0.1, "the purge's log line")
        # a row that ages past retention while it runs goes at its next purge
        _age(store, "new", 8)
        wait_for(lambda: left() == set(), 60, 0.2, "the next purge")
    with store.session() as s:
        assert repo.kept_jobs(s, "o1", ["old", "new"]) == set()
