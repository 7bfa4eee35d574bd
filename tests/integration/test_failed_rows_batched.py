"""Failed Send rows of concurrent jobs go to the store in shared transactions (issue 18: writes
per batch, not per job), each caller waiting for its own rows' commit; one caller's bad rows
fail that caller only. On both engines."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from worker.failures.batched import RowWriter
from worker.failures.kinds import FailedKind
from worker.failures.rows import failed_send_row
from worker.store.db import Store
from worker.store.models import FailedSend


def _row(owner: str, recipient: str | None) -> dict[str, Any]:
    return failed_send_row(
        job_id=str(uuid.uuid4()),
        owner=owner,
        channel="msc",
        recipient=recipient,  # type: ignore[arg-type]
        kind=FailedKind.REJECTED,
        reason="userunknown",
        hard=True,
        diagnostic="550 5.1.1 no such user",
        subject="Batched",
        identity="Ann <ann@acme.example>",
        metadata=None,
        reply_code=550,
        enhanced_status="5.1.1",
    )


def _count(store: Store, owner: str) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).where(FailedSend.owner == owner)) or 0)


def test_concurrent_failures_share_transactions(store: Store) -> None:
    writer = RowWriter(lambda: store)
    owner = f"batch-{uuid.uuid4().hex[:6]}"

    async def run() -> None:
        await asyncio.gather(
            *(writer.write([_row(owner, f"r{i}@example.org")]) for i in range(300))
        )

    asyncio.run(run())
    assert _count(store, owner) == 300  # every caller returned after its row was committed
    assert writer.transactions <= 3, writer.transactions  # not 300


def test_one_callers_bad_rows_fail_that_caller_only(store: Store) -> None:
    writer = RowWriter(lambda: store)
    owner = f"bad-{uuid.uuid4().hex[:6]}"

    async def run() -> list[BaseException | None]:
        calls = [writer.write([_row(owner, f"r{i}@example.org")]) for i in range(20)]
        calls.insert(7, writer.write([_row(owner, None)]))  # NOT NULL recipient: refused
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(run())
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert failed == [7]
    assert _count(store, owner) == 20


pytestmark = pytest.mark.timeout(60)
