"""``send``, ``send-batch``, ``status``, ``cancel``: what a producing service runs.

These need only ``producers`` and ``config`` (the bare package); ``status`` adds the job's
Failed Sends where the store is installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from config.channels import CHANNELS
from config.settings import get_settings
from config.states import JobState
from producers.cli.common import failed_dict, make_dispatcher, print_json
from producers.errors import JobIdTaken
from producers.job import InvalidJob, parse_job


def register(sub: argparse._SubParsersAction) -> None:
    """Declare ``send``, ``send-batch``, ``status`` and ``cancel``."""
    p = sub.add_parser("send", help="validate and enqueue one message")
    p.add_argument("--owner", required=True, help="the account the message is sent for")
    p.add_argument("--from", dest="sender", required=True, help="the identity: 'Name <address>'")
    p.add_argument("--to", action="append", default=[], required=True, help="a recipient (repeat)")
    p.add_argument("--cc", action="append", help="a Cc recipient (repeat)")
    p.add_argument("--bcc", action="append", help="a Bcc recipient (repeat)")
    p.add_argument("--reply-to", help="the Reply-To address")
    p.add_argument("--subject", default="")
    p.add_argument("--text", help="the plain-text body")
    p.add_argument("--html", help="the HTML body")
    p.add_argument("--header", action="append", help="an extra header: 'Name: value' (repeat)")
    p.add_argument("--channel", choices=CHANNELS, help="default: the owner's preferred channel")
    p.add_argument("--idempotency-key", help="a second send with this key returns the first id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_send)

    p = sub.add_parser("send-batch", help="validate every job of a JSONL file, then enqueue them")
    p.add_argument("file", help="one job (JSON object) per line")
    p.add_argument("--skip-invalid", action="store_true", help="enqueue the valid lines anyway")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_send_batch)

    p = sub.add_parser("status", help="a job's state and its Failed Sends (then its history)")
    p.add_argument("job", help="the job's id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("cancel", help="cancel a job not sent yet (exit 3 when too late)")
    p.add_argument("job", help="the job's id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_cancel)


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

    dispatcher = make_dispatcher()
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
        print_json({"id": str(job_id)})
    else:
        print(job_id)
    return 0


def _invalid(exc: InvalidJob, as_json: bool) -> int:
    if as_json:
        print_json({"error": "invalid job", "fields": [e.model_dump() for e in exc.errors]})
    else:
        for e in exc.errors:
            print(f"error: {e.field}: {e.message}", file=sys.stderr)
    return exc.exit_code


def _taken(errors: Sequence[InvalidJob], as_json: bool, where: str = "index") -> int:
    if as_json:
        print_json(
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
        print_json(
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
    dispatcher = make_dispatcher()
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
        print_json({"enqueued": len(ids), "invalid": bad, "ids": [str(i) for i in ids]})
    else:
        print(f"enqueued {len(ids)} job(s); {bad} invalid line(s) skipped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Show a job's state."""
    dispatcher = make_dispatcher()
    state = dispatcher.status(args.job)
    dispatcher.close()
    failures: list[dict[str, Any]] = []
    try:
        from worker.history import query
        from worker.store import open_store, repo

        with open_store(get_settings().database_url).session() as session:
            failures = [failed_dict(f) for f in repo.failed_sends_for_job(session, args.job)]
            if state is None:  # expired from Redis: the history's copy, if it has one
                kept = query.get_message(session, args.job)
                if kept is not None:
                    state = kept.state_hash()
    except ImportError:  # a producer-only install has no store
        pass
    if state is None and not failures:
        print(f"unknown job {args.job}", file=sys.stderr)
        return 1
    result = {"id": args.job, **(state or {"state": "failed"}), "failed_sends": failures}
    if args.json:
        print_json(result)
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
    dispatcher = make_dispatcher()
    try:
        state = dispatcher.cancel(args.job)
    finally:
        dispatcher.close()
    if args.json:
        print_json({"id": args.job, "state": state, "cancelled": state == JobState.CANCELLED})
    elif state is None:
        print(f"unknown job {args.job}", file=sys.stderr)
    elif state == JobState.CANCELLED:
        print(f"{args.job}: cancelled")
    else:
        print(f"{args.job} is {state}: too late to cancel", file=sys.stderr)
    return {None: 1, JobState.CANCELLED.value: 0}.get(state, 3)
