"""The ``maildispatch`` command.

Producer commands (send, send-batch, status) need only ``producers`` and ``config`` (the bare
package); operator commands (failed, db, demo, scheduler, bounce-server ...) import ``worker``
when they run, and say which extra to install where its dependencies are missing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from config.channels import CHANNELS
from config.settings import ConfigurationError, get_settings
from config.states import JobState
from producers.errors import JobIdTaken
from producers.job import InvalidJob, parse_job

#: modules that add subcommands: each has ``register(subparsers)``, which only declares
#: arguments (cheap, no worker imports); handlers import what they need when they run
EXTENSIONS: tuple[str, ...] = (
    "worker.accounts.cli",
    "worker.bounces.intake.commands",
    "worker.api.cli",
    "worker.message.dkim_cli",
    "worker.consume.supervisor",
)


def _print_json(data: Any) -> None:
    print(json.dumps(data, default=str, ensure_ascii=False))


def _dispatcher() -> Any:
    from producers.client import Dispatcher

    return Dispatcher(get_settings())


# -- producer commands -------------------------------------------------------------------------
def cmd_send(args: argparse.Namespace) -> int:
    """Validate and enqueue one message."""
    data: dict[str, Any] = {
        "owner": args.owner,
        "identity": args.sender,
        "to": args.to,
        "cc": args.cc or [],
        "bcc": args.bcc or [],
        "subject": args.subject,
    }
    for key in ("text", "html", "channel", "idempotency_key", "reply_to"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.header:
        if any(":" not in h for h in args.header):
            print("error: --header must be 'Name: value'", file=sys.stderr)
            return 2
        pairs = (h.split(":", 1) for h in args.header)
        data["headers"] = {name.strip(): value.strip() for name, value in pairs}
    try:
        job = parse_job(data)
    except InvalidJob as exc:
        return _invalid(exc, args.json)
    from producers.client import IdempotencyInProgress
    from producers.errors import EnqueueFailed, JobIdTaken

    dispatcher = _dispatcher()
    try:
        job_id = dispatcher.send(job)
    except JobIdTaken as exc:
        return _taken([exc], args.json)
    except InvalidJob as exc:  # a limit of this deployment (size, recipients)
        return _invalid(exc, args.json)
    except IdempotencyInProgress as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except EnqueueFailed as exc:
        return _enqueue_failed(exc, args.json)
    finally:
        dispatcher.close()
    if args.json:
        _print_json({"id": str(job_id)})
    else:
        print(job_id)
    return 0


def _invalid(exc: InvalidJob, as_json: bool) -> int:
    if as_json:
        _print_json({"error": "invalid job", "fields": [e.model_dump() for e in exc.errors]})
    else:
        for e in exc.errors:
            print(f"error: {e.field}: {e.message}", file=sys.stderr)
    return exc.exit_code


def _taken(errors: Sequence[InvalidJob], as_json: bool, where: str = "index") -> int:
    if as_json:
        _print_json(
            {
                "error": "job id taken",
                "jobs": [{where: e.index, "id": getattr(e, "job_id", None)} for e in errors],
            }
        )
    else:
        for e in errors:
            at = f"{where} {e.index}: " if e.index is not None else ""
            print(f"error: {at}" + "; ".join(f.message for f in e.errors), file=sys.stderr)
    return JobIdTaken.exit_code


def _enqueue_failed(exc: Any, as_json: bool) -> int:
    """Which jobs were enqueued (they will be delivered) and which were not."""
    if as_json:
        _print_json(
            {
                "error": str(exc),
                "ids": [str(i) if i else None for i in exc.ids],
                "not_enqueued": [str(i) for i in exc.not_enqueued],
            }
        )
    else:
        print(f"error: {exc}", file=sys.stderr)
        for i in exc.enqueued:
            print(f"enqueued: {i}", file=sys.stderr)
    return int(exc.exit_code)


def cmd_send_batch(args: argparse.Namespace) -> int:
    """Validate every line of a JSONL file, then enqueue the valid jobs in batches."""
    from rich.progress import Progress

    from producers.client import IdempotencyInProgress
    from producers.errors import EnqueueFailed, JobIdsTaken

    path = Path(args.file)
    if not path.is_file():
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return 66  # EX_NOINPUT
    dispatcher = _dispatcher()
    jobs, bad = [], 0
    numbers: list[int] = []  # the line of each job
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                jobs.append(dispatcher.validate(line, number))
                numbers.append(number)
            except InvalidJob as exc:
                bad += 1
                for e in exc.errors:
                    print(f"line {number}: {e.field}: {e.message}", file=sys.stderr)
    if bad and not args.skip_invalid:
        print(
            f"{bad} invalid line(s); nothing enqueued (use --skip-invalid to send the rest)",
            file=sys.stderr,
        )
        return 2
    with Progress(transient=True, disable=args.json or not sys.stderr.isatty()) as progress:
        bar = progress.add_task("enqueueing", total=len(jobs))
        try:
            ids = dispatcher.send_many(jobs, progress=lambda n: progress.advance(bar, n))
        except JobIdsTaken as exc:  # errors name positions in `jobs`: shown as line numbers
            for t in exc.errors:
                t.index = numbers[t.index] if t.index is not None else None
            return _taken(exc.errors, args.json, "line")
        except IdempotencyInProgress as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        except EnqueueFailed as exc:
            return _enqueue_failed(exc, args.json)
        finally:
            dispatcher.close()
    if args.json:
        _print_json({"enqueued": len(ids), "invalid": bad, "ids": [str(i) for i in ids]})
    else:
        print(f"enqueued {len(ids)} job(s); {bad} invalid line(s) skipped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Show a job's state."""
    dispatcher = _dispatcher()
    state = dispatcher.status(args.job)
    dispatcher.close()
    failures: list[dict[str, Any]] = []
    try:
        from worker.store import open_store, repo

        with open_store(get_settings().database_url).session() as session:
            failures = [_failed_dict(f) for f in repo.failed_sends_for_job(session, args.job)]
    except ImportError:  # a producer-only install has no store
        pass
    if state is None and not failures:
        print(f"unknown job {args.job}", file=sys.stderr)
        return 1
    result = {"id": args.job, **(state or {"state": "failed"}), "failed_sends": failures}
    if args.json:
        _print_json(result)
    else:
        for key, value in result.items():
            if key != "failed_sends":
                print(f"{key:>12}: {value}")
        for f in failures:
            print(
                f"      failed: {f['recipient']} {f['kind']} {f['reply_code']} {f['enhanced_status']} {f['reason']}"
            )
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a job that is not sent yet."""
    dispatcher = _dispatcher()
    try:
        state = dispatcher.cancel(args.job)
    finally:
        dispatcher.close()
    if args.json:
        _print_json({"id": args.job, "state": state, "cancelled": state == JobState.CANCELLED})
    elif state is None:
        print(f"unknown job {args.job}", file=sys.stderr)
    elif state == JobState.CANCELLED:
        print(f"{args.job}: cancelled")
    else:
        print(f"{args.job} is {state}: too late to cancel", file=sys.stderr)
    return {None: 1, JobState.CANCELLED.value: 0}.get(state, 3)


# -- operator commands (import worker) ---------------------------------------------------------
def _failed_dict(row: Any) -> dict[str, Any]:
    """A Failed Send as the HTTP API shows it (one shape for both)."""
    from worker.failures.rows import failed_out

    shown: dict[str, Any] = failed_out(row).model_dump(mode="json")
    return shown


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
        purged = purge(store, failed_days, content_days).as_dict()
        _print_json(purged) if args.json else print(
            f"purged {purged['failed_sends']} Failed Sends, {purged['job_contents']} job contents"
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
            rows = [_failed_dict(f) for f in page.items]
        if args.json:
            _print_json({"items": rows, "next_cursor": page.next_cursor})
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
        found = _failed_dict(row) if row else None
    if found is None:
        print(f"no Failed Send {args.id}", file=sys.stderr)
        return 1
    if args.action == "show":
        _print_json(found) if args.json else [print(f"{k:>16}: {v}") for k, v in found.items()]
        return 0
    from worker.failures.resend import CannotResend, resend

    try:
        new_id = resend(store, _dispatcher(), args.id)
    except CannotResend as exc:  # e.g. a bounce: its job's body was not kept
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_json({"id": str(new_id), "resend_of": args.id}) if args.json else print(new_id)
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    """Bring the database schema up to date."""
    from worker.store.db import Store

    Store(get_settings().database_url)
    print("database is up to date")
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    """Run the retry scheduler until stopped."""
    import asyncio

    from worker.jobs import scheduler
    from worker.observe.logging import configure_logging

    settings = get_settings()
    settings.require_secret_key()
    configure_logging(settings)
    asyncio.run(scheduler.run(settings))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the main job end to end on the embedded defaults."""
    from worker.demo import run_demo

    return run_demo()


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
        _print_json(rows)
    else:
        for r in rows:
            print(f"{r['owner']:<16} {r['address']:<40} {r['reason']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="maildispatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("send", help="enqueue one message")
    p.add_argument("--owner", required=True)
    p.add_argument("--from", dest="sender", required=True, help="'Name <address>'")
    p.add_argument("--to", action="append", default=[], required=True)
    p.add_argument("--cc", action="append")
    p.add_argument("--bcc", action="append")
    p.add_argument("--reply-to")
    p.add_argument("--subject", default="")
    p.add_argument("--text")
    p.add_argument("--html")
    p.add_argument("--header", action="append", help="'Name: value'")
    p.add_argument("--channel", choices=CHANNELS)
    p.add_argument("--idempotency-key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_send)

    p = sub.add_parser("send-batch", help="enqueue every job of a JSONL file")
    p.add_argument("file")
    p.add_argument("--skip-invalid", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_send_batch)

    p = sub.add_parser("status", help="a job's state")
    p.add_argument("job")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("cancel", help="cancel a job not sent yet (exit 3 when too late)")
    p.add_argument("job")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("failed", help="Failed Sends")
    fs = p.add_subparsers(dest="action", required=True)
    q = fs.add_parser("list")
    q.add_argument("--owner")
    q.add_argument("--kind")
    q.add_argument("--recipient", help="one address's failures")
    q.add_argument("--cursor", type=int)
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--json", action="store_true")
    for action in ("show", "resend"):
        q = fs.add_parser(action)
        q.add_argument("id", type=int)
        q.add_argument("--json", action="store_true")
    q = fs.add_parser("purge", help="delete what is past its retention (as the scheduler does)")
    q.add_argument("--days", type=int, help="Failed Sends older than this (default: setting)")
    q.add_argument("--content-days", type=int, help="job contents older than this (0: keep)")
    q.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_failed)

    p = sub.add_parser("suppressions", help="the suppression list")
    ss = p.add_subparsers(dest="action", required=True)
    q = ss.add_parser("list")
    q.add_argument("--owner")
    q.add_argument("--json", action="store_true")
    q = ss.add_parser("remove")
    q.add_argument("--owner", required=True)
    q.add_argument("address")
    q = ss.add_parser("add", help="suppress an address for an owner (e.g. an unsubscribe)")
    q.add_argument("--owner", required=True, help="the owner, or * for every owner")
    q.add_argument("--reason", default="manual")
    q.add_argument("address")
    p.set_defaults(handler=cmd_suppressions)

    p = sub.add_parser("db", help="database schema")
    p.add_argument("action", choices=["upgrade"])
    p.set_defaults(handler=cmd_db)

    sub.add_parser("scheduler", help="run the retry scheduler").set_defaults(handler=cmd_scheduler)
    sub.add_parser("demo", help="run the main job on embedded defaults").set_defaults(
        handler=cmd_demo
    )
    for module in EXTENSIONS:
        try:
            importlib.import_module(module).register(sub)
        except ImportError:  # a producer-only install lacks the worker's commands
            continue
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``maildispatch`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] in ("config", "producers", "worker"):
            raise
        # a producer-only install (the bare package) runs the send commands only
        print(
            f"this command needs the worker's dependencies ({exc.name} is not installed): "
            "pip install 'maildispatch[worker]' (or [all])",
            file=sys.stderr,
        )
        return 69  # EX_UNAVAILABLE
    return code


if __name__ == "__main__":
    sys.exit(main())
