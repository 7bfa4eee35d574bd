"""``failed`` and ``suppressions``: the operator's view of what could not be delivered."""

from __future__ import annotations

import argparse
import sys

from config.settings import get_settings
from producers.cli.common import failed_dict, make_dispatcher, print_json
from producers.job import InvalidJob


def register(sub: argparse._SubParsersAction) -> None:
    """Declare ``failed`` and ``suppressions``."""
    p = sub.add_parser("failed", help="Failed Sends: list, show, resend, purge")
    fs = p.add_subparsers(dest="action", required=True)
    q = fs.add_parser("list", help="Failed Sends, newest first")
    q.add_argument("--owner", help="one owner's")
    q.add_argument("--kind", help="one kind's (e.g. bounced, rejected, auth)")
    q.add_argument("--recipient", help="one address's")
    q.add_argument("--cursor", type=int, help="the next page (printed after a full page)")
    q.add_argument("--limit", type=int, default=50, help="rows per page")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = fs.add_parser("show", help="one Failed Send")
    q.add_argument("id", type=int, help="the Failed Send's id")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = fs.add_parser("resend", help="enqueue the failed message again, as a new job")
    q.add_argument("id", type=int, help="the Failed Send's id")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = fs.add_parser("purge", help="delete what is past its retention (as the scheduler does)")
    q.add_argument("--days", type=int, help="Failed Sends older than this (default: setting)")
    q.add_argument("--content-days", type=int, help="job contents older than this (0: keep)")
    q.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_failed)

    p = sub.add_parser("suppressions", help="the suppression list: list, add, remove")
    ss = p.add_subparsers(dest="action", required=True)
    q = ss.add_parser("list", help="suppressed addresses")
    q.add_argument("--owner", help="one owner's")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = ss.add_parser("remove", help="send to an address again")
    q.add_argument("--owner", required=True, help="the owner, or * for every owner")
    q.add_argument("address")
    q = ss.add_parser("add", help="suppress an address for an owner (e.g. an unsubscribe)")
    q.add_argument("--owner", required=True, help="the owner, or * for every owner")
    q.add_argument("--reason", default="manual", help="why (shown in the list)")
    q.add_argument("address")
    p.set_defaults(handler=cmd_suppressions)


def cmd_failed(args: argparse.Namespace) -> int:
    """List, show or resend Failed Sends."""
    from worker.store import open_store, repo
    from worker.store.models import FAILED_KINDS

    store = open_store(get_settings().database_url)
    if args.action == "purge":
        from worker.store.retention import purge

        settings = get_settings()
        failed_days = settings.failed_send_retention_days if args.days is None else args.days
        content_days = (
            settings.job_content_retention_days if args.content_days is None else args.content_days
        )
        purged = purge(store, failed_days, content_days, settings.history_days).as_dict()
        print_json(purged) if args.json else print(
            f"purged {purged['failed_sends']} Failed Sends, {purged['job_contents']} job "
            f"contents, {purged['messages']} messages of the history"
        )
        return 0
    if args.action == "list":
        if args.kind and args.kind not in FAILED_KINDS:
            print(f"error: --kind must be one of {', '.join(FAILED_KINDS)}", file=sys.stderr)
            return 2
        with store.session() as session:
            page = repo.list_failed_sends(
                session,
                args.owner,
                kind=args.kind,
                recipient=args.recipient,
                cursor=args.cursor,
                limit=args.limit,
            )
            rows = [failed_dict(f) for f in page.items]
        if args.json:
            print_json({"items": rows, "next_cursor": page.next_cursor})
        else:
            for r in rows:
                print(
                    f"{r['id']:>6} {r['created_at'][:19]} {r['owner']:<12} {r['recipient']:<32} "
                    f"{r['kind']:<10} {r['reply_code'] or '':>3} {r['enhanced_status'] or '':<7} {r['reason']}"
                )
            if page.next_cursor:
                print(f"more: --cursor {page.next_cursor}")
        return 0
    with store.session() as session:
        row = repo.get_failed_send(session, args.id)
        found = failed_dict(row) if row else None
    if found is None:
        print(f"no Failed Send {args.id}", file=sys.stderr)
        return 1
    if args.action == "show":
        print_json(found) if args.json else [print(f"{k:>16}: {v}") for k, v in found.items()]
        return 0
    from worker.failures.resend import CannotResend, resend

    try:
        new_id = resend(store, make_dispatcher(), args.id)
    except CannotResend as exc:  # e.g. a bounce: its job's body was not kept
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_json({"id": str(new_id), "resend_of": args.id}) if args.json else print(new_id)
    return 0


def cmd_suppressions(args: argparse.Namespace) -> int:
    """List or remove suppressed addresses."""
    from worker.store import open_store, repo

    if args.action == "add":
        from pydantic import ValidationError

        from worker.failures.suppressions import SuppressionIn

        try:
            wanted = SuppressionIn(owner=args.owner, address=args.address, reason=args.reason)
        except ValidationError as exc:
            raise SystemExit(f"error: {InvalidJob.from_validation(exc)}") from None
        with open_store(get_settings().database_url).session() as session:
            repo.suppress(session, wanted.owner, [wanted.address], wanted.reason)
        print(f"suppressed {wanted.address.lower()} for {wanted.owner}")
        return 0
    store = open_store(get_settings().database_url)
    with store.session() as session:
        if args.action == "remove":
            removed = repo.unsuppress(session, args.owner, args.address)
            print(f"removed {removed}")
            return 0 if removed else 1
        rows = [
            {
                "owner": s.owner,
                "address": s.address,
                "reason": s.reason,
                "job_id": s.source_job_id,
                "created_at": s.created_at.isoformat(),
            }
            for s in repo.list_suppressions(session, args.owner)
        ]
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            print(f"{r['owner']:<16} {r['address']:<40} {r['reason']}")
    return 0
