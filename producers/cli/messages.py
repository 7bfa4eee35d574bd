"""``messages list``: the message history (worker/history/), each job's outcome."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from config.settings import get_settings
from config.states import FINAL
from producers.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    """Declare ``messages``."""
    p = sub.add_parser("messages", help="the message history: every job's outcome")
    ms = p.add_subparsers(dest="action", required=True)
    q = ms.add_parser("list", help="jobs and their outcomes, newest first")
    q.add_argument("--owner", help="one owner's")
    q.add_argument("--recipient", help="one address's (whatever its case)")
    q.add_argument("--state", choices=sorted(FINAL), help="one outcome's")
    q.add_argument("--since", type=_when, help="recorded since (ISO 8601, e.g. 2026-12-01)")
    q.add_argument("--cursor", type=int, help="the next page (printed after a full page)")
    q.add_argument("--limit", type=int, default=50, help="messages per page (at most 1,000)")
    q.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_messages)


def _when(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cmd_messages(args: argparse.Namespace) -> int:
    """List the history."""
    from worker.history import query
    from worker.store import open_store

    if not 1 <= args.limit <= 1000:
        print("error: --limit must be between 1 and 1,000", file=sys.stderr)
        return 2
    with open_store(get_settings().database_url).session() as session:
        page = query.list_messages(
            session,
            args.owner,
            recipient=args.recipient,
            state=args.state,
            since=args.since,
            cursor=args.cursor,
            limit=args.limit,
        )
    items = [m.as_dict() for m in page.items]
    if args.json:
        print_json({"messages": items, "next_cursor": page.next_cursor})
        return 0
    for m in items:
        when = datetime.fromtimestamp(m["finished_at"], UTC).isoformat(timespec="seconds")
        detail = m["reply"] if m["state"] == "sent" else m["last_error"]
        print(
            f"{when} {m['id']} {m['owner']:<12} {m['state']:<10} {','.join(m['recipients']):<32} "
            f"{detail or ''}"[:200]
        )
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}")
    return 0
