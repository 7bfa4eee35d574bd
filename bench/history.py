"""What the message history costs: the scheduler's writer, alone, on SQLite and PostgreSQL.

Usage: python -m bench.history [--count N] [--postgres URL]

``count`` outcomes as the delivery path leaves them (a ``message.sent`` event in the stream, the
job's final state hash with a realistic subject, reply and metadata) are written into a private
Redis; then :class:`~worker.history.record.HistoryWriter` runs until it has written them all,
as the scheduler does (batches of ``record.BATCH``). Printed: outcomes written per second, and
the writing process' CPU per outcome (reading the stream and the hashes, building the rows,
the SQL transaction; the database server's own CPU is PostgreSQL's, counted apart). The other
side of the cost, a drain of the same jobs with the history on and off, is a design of
``bench/run.py`` (``drain: send_many, history off``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RedisServer, sent_event
from config import keys

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _fill(redis: RedisServer, count: int) -> None:
    now = time.time()
    pipe = redis.client.pipeline(transaction=False)
    for n in range(count):
        job_id = str(uuid.uuid4())
        owner = f"acct-{n % 50}"
        pipe.hset(
            keys.job(job_id),
            mapping={
                "state": "sent",
                "owner": owner,
                "channel": "msc",
                "subject": f"Your order #{100000 + n} has shipped",
                "identity": "Acme Shop <orders@acme.example>",
                "recipients": "1",
                "attempts": "1",
                "enqueued_at": repr(now - 0.05),
                "updated_at": repr(now),
                "reply": f"250 2.0.0 Ok: queued as {n:012X}",
                "provider_id": f"{n:012X}",
                "from_address": "orders@acme.example",
                "from_replaced": "no",
            },
        )
        pipe.xadd(keys.events_of(job_id), sent_event(n, job_id, owner))
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()


def writer_cost(redis: RedisServer, database_url: str, count: int) -> dict[str, Any]:
    """Write ``count`` outcomes into the history at ``database_url``; the figures."""
    import redis.asyncio as aioredis

    from worker.history.record import HistoryWriter
    from worker.store.db import Store

    redis.client.flushall()
    _fill(redis, count)
    store = Store(database_url)
    writer = HistoryWriter(lambda: store, "bench")

    async def drain() -> int:
        client = aioredis.Redis(port=redis.port)
        written = 0
        try:
            while written < count:
                done = await writer.tick(client)
                if not done:
                    break
                written += done
        finally:
            await client.aclose()
        return written

    try:
        cpu, start = time.process_time(), time.perf_counter()
        written = asyncio.run(drain())
        seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    finally:
        store.dispose()
    return {
        "database": database_url.split(":", 1)[0],
        "count": written,
        "per_s": written / seconds if seconds else 0.0,
        "cpu_us": cpu_s / max(written, 1) * 1e6,
    }


def costs(tmp: Path, count: int, postgres: str | None) -> list[dict[str, Any]]:
    """The writer on a SQLite file and, when reachable, on PostgreSQL (a schema of its own)."""
    tmp.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(tmp)
    out = []
    try:
        out.append(writer_cost(redis, f"sqlite:///{tmp / 'history.db'}", count))
        if postgres:
            from sqlalchemy import text

            from worker.store.db import make_engine

            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = make_engine(postgres)
            try:
                with admin.begin() as conn:
                    conn.execute(text(f"CREATE SCHEMA {schema}"))
                try:
                    url = f"{postgres}?options=-csearch_path%3D{schema}"
                    out.append(writer_cost(redis, url, count))
                finally:
                    with admin.begin() as conn:
                        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            except Exception as exc:  # no PostgreSQL here: SQLite's figure stands alone
                print(f"PostgreSQL skipped: {exc.__class__.__name__}", file=sys.stderr)
            finally:
                admin.dispose()
    finally:
        redis.stop()
    return out


def line(figures: list[dict[str, Any]]) -> str:
    """One report line."""
    parts = [
        f"{f['database']} {f['per_s']:,.0f}/s, {f['cpu_us']:,.0f} µs CPU each" for f in figures
    ]
    return f"message history writer ({figures[0]['count']:,} outcomes): " + "; ".join(parts)


def main() -> int:
    """Run it alone."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--postgres", default=POSTGRES, help="'' to skip PostgreSQL")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="maildispatch-history-") as tmp:
        print(line(costs(Path(tmp), args.count, args.postgres or None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
