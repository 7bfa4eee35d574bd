"""worker/observe/logging.py: JSON lines carry the fields of the enclosing ``log_context`` blocks."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys

import pytest
import structlog

from config.settings import Settings
from worker.observe.logging import configure_logging, log_context


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    err = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(err, write_through=True))
    configure_logging(Settings(secret_key="k" * 40, log_format="json"))  # type: ignore[call-arg]

    def read() -> list[dict[str, object]]:
        return [json.loads(x) for x in err.getvalue().splitlines() if x.startswith(b"{")]

    yield read
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_fields_nest_and_end_with_their_block(lines) -> None:  # type: ignore[no-untyped-def]
    log = structlog.get_logger("t")
    with log_context(job_id="j1", channel="msc"):
        with log_context(attempt=2):
            log.info("inner", reply_code=250)
        log.info("outer")
    log.info("after")
    inner, outer, after = lines()
    assert inner | {"timestamp": None} == {
        "event": "inner",
        "level": "info",
        "reply_code": 250,
        "job_id": "j1",
        "channel": "msc",
        "attempt": 2,
        "timestamp": None,
    }
    assert (outer["job_id"], "attempt" in outer) == ("j1", False)
    assert "job_id" not in after


def test_concurrent_tasks_see_their_own_fields(lines) -> None:  # type: ignore[no-untyped-def]
    log = structlog.get_logger("t")

    async def job(n: int) -> None:
        with log_context(job_id=f"j{n}"):
            await asyncio.sleep(0.01 * (3 - n))  # interleave: the last started logs first
            log.info("done", n=n)

    async def main() -> None:
        await asyncio.gather(*(job(n) for n in range(3)))

    asyncio.run(main())
    assert sorted((x["n"], x["job_id"]) for x in lines()) == [(0, "j0"), (1, "j1"), (2, "j2")]


def test_stdlib_records_carry_the_fields_too(lines) -> None:  # type: ignore[no-untyped-def]
    with log_context(job_id="j9"):
        logging.getLogger("celery.worker").warning("from a library")
    (line,) = lines()
    assert (line["event"], line["job_id"]) == ("from a library", "j9")
