"""``bounce-server``, ``bounce-poll``, ``bounces parse`` and ``bounces dead list|retry|drop``.

The bounce intake's processes, the classifier run on saved files, and the operator's view of
the reports that could not be ingested (the dead letters).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from config.redisconn import connect


def register(sub: argparse._SubParsersAction) -> None:
    """Declare ``bounce-server``, ``bounce-poll`` and ``bounces``."""
    p = sub.add_parser("bounce-server", help="inbound SMTP server for the bounce domain")
    p.add_argument("--listen", help="host:port (default MAILDISPATCH_BOUNCE_LISTEN)")
    p.set_defaults(handler=cmd_bounce_server)

    p = sub.add_parser("bounce-poll", help="enqueue bounces from an IMAP mailbox")
    p.add_argument("--imap", required=True, help="imaps://user@host[:port]/MAILBOX")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin "
        "(default: MAILDISPATCH_BOUNCE_IMAP_PASSWORD)",
    )
    p.add_argument("--once", action="store_true", help="one round, then exit")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between rounds")
    p.add_argument(
        "--mark-seen", action="store_true", help="flag handled messages \\Seen instead of deleting"
    )
    p.add_argument("--ca-file", help="PEM file of a CA to trust for the server's certificate")
    p.set_defaults(handler=cmd_bounce_poll)

    p = sub.add_parser("bounces", help="bounce reports: classify saved files, dead letters")
    bs = p.add_subparsers(dest="action", required=True)
    q = bs.add_parser("parse", help="classify saved bounce messages")
    q.add_argument("files", nargs="+", metavar="FILE")
    q.add_argument("--json", action="store_true", help="one JSON object per file")
    q.add_argument(
        "--explain",
        action="store_true",
        help="also the decoder that read each file, and why each reason and status were chosen",
    )
    d = bs.add_parser("dead", help="reports that could not be ingested (dead letters)")
    ds = d.add_subparsers(dest="dead_action", required=True)
    x = ds.add_parser("list", help="list the dead letters, oldest first")
    x.add_argument("--json", action="store_true", help="one JSON object per line")
    x = ds.add_parser("retry", help="queue a dead letter for ingest again, then remove it")
    x.add_argument("ids", nargs="+", metavar="ID")
    x = ds.add_parser("drop", help="remove a dead letter")
    x.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(handler=cmd_bounces)


def cmd_bounce_server(args: argparse.Namespace) -> int:
    """Run the bounce server until SIGTERM."""
    import asyncio

    from config.settings import get_settings
    from worker.bounces.intake.server import serve
    from worker.observe.logging import configure_logging

    settings = get_settings()
    settings.require_secret_key()
    configure_logging(settings)
    asyncio.run(serve(settings, args.listen))
    return 0


def cmd_bounce_poll(args: argparse.Namespace) -> int:
    """Poll an IMAP mailbox for bounces."""

    from config.settings import ConfigurationError, get_settings
    from worker.bounces.intake.enqueue import BouncePublisher
    from worker.bounces.intake.poll import MailboxUrl, Poller, run
    from worker.bounces.intake.pollskip import SkipBook
    from worker.observe.logging import configure_logging

    settings = get_settings()
    settings.require_secret_key()
    configure_logging(settings)
    url = MailboxUrl.parse(args.imap)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif settings.bounce_imap_password is not None:
        password = settings.bounce_imap_password.get_secret_value()
    else:
        raise ConfigurationError(
            "no IMAP password: set MAILDISPATCH_BOUNCE_IMAP_PASSWORD or use --password-stdin"
        )
    publisher = BouncePublisher(settings)
    timeout = settings.bounce_publish_timeout
    client = connect(
        settings.state_redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        poller = Poller(
            url,
            password,
            publisher,
            mark_seen=args.mark_seen,
            ca_file=args.ca_file,
            skips=SkipBook(client, str(url)),
            max_bytes=settings.bounce_poll_max_bytes,
            queue_max_bytes=settings.bounce_max_bytes,
        )
        return run(poller, once=args.once, interval=args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        publisher.close()
        client.close()


def cmd_bounces(args: argparse.Namespace) -> int:
    """``bounces parse``: print each file's classification; ``bounces dead ...``."""
    if args.action == "dead":
        return dead_command(args)
    return parse_files(list(args.files), args.json, args.explain)


def dead_command(args: argparse.Namespace) -> int:
    """Run one ``bounces dead`` action; exit 1 when an id was unknown or could not be queued."""

    from config.settings import get_settings
    from worker.bounces.intake.deadletter import DeadLetters

    settings = get_settings()
    client = connect(settings.state_redis_url, socket_timeout=10)
    dead = DeadLetters(client)
    out = sys.stdout
    try:
        if args.dead_action == "list":
            for entry in dead.entries():
                if args.json:
                    out.write(json.dumps(entry) + "\n")
                else:
                    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["at"]))
                    out.write(
                        f"{entry['id']}  {when}  {entry['why']:<18} {entry['source'] or '-':<5} "
                        f"{entry.get('size') or '-'} bytes\n"
                    )
            return 0
        if args.dead_action == "drop":
            status = 0
            for entry_id in args.ids:
                if not dead.drop(entry_id):
                    sys.stderr.write(f"no dead letter {entry_id}\n")
                    status = 1
            return status
        return _retry(dead, args.ids, settings)
    finally:
        client.close()


def _retry(dead: Any, ids: list[str], settings: Any) -> int:
    from worker.bounces.intake.enqueue import BounceNotQueued, BouncePublisher, InboundMessage

    publisher = BouncePublisher(settings)
    status = 0
    try:
        for entry_id in ids:
            found = dead.get(entry_id)
            if found is None:
                sys.stderr.write(f"no dead letter {entry_id}\n")
                status = 1
                continue
            meta, wire = found
            try:
                message = InboundMessage.from_wire(wire)
            except ValueError:
                sys.stderr.write(f"{entry_id}: no message to ingest ({meta['why']}); drop it\n")
                status = 1
                continue
            try:
                task_id = publisher.publish(message)
            except BounceNotQueued as exc:
                sys.stderr.write(f"{entry_id}: not queued, kept: {exc}\n")
                status = 1
                continue
            dead.drop(entry_id)  # only once the broker has it: never lost between the two
            sys.stdout.write(f"{entry_id} queued as {task_id}\n")
    finally:
        publisher.close()
    return status


def parse_files(paths: list[str], as_json: bool, explain: bool = False) -> int:
    """Parse each file and print one line per file (with ``explain``, the decoder and why each
    reason was chosen too); return 1 if any file was unreadable."""
    from worker.bounces.classify.parse import parse_bounce

    status = 0
    out = sys.stdout
    for path in paths:
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            status = 1
            out.write(json.dumps({"file": path, "error": str(exc)}) + "\n")
            continue
        try:
            report = parse_bounce(raw)
        except Exception as exc:  # one bad file must not end the batch
            status = 1
            out.write(json.dumps({"file": path, "error": f"parser failed: {exc!r}"}) + "\n")
            continue
        if as_json:
            decoder = report.decoder or None  # "fallback": read from the text, no decoder knew it
            row: dict[str, Any] = {
                "file": path,
                "decoder": decoder,
                "bounces": [b.as_json() | {"decoder": decoder} for b in report.bounces],
            }
            if explain:
                row["kind"] = report.kind
                for shown, b in zip(row["bounces"], report.bounces, strict=True):
                    shown["why"] = b.why
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        elif explain:
            read_by = f"read by the {report.decoder} decoder" if report.decoder else "no decoder"
            out.write(f"{path}: {report.kind}, {read_by}\n")
            for b in report.bounces:
                out.write(
                    f"  {b.recipient}\n    action {b.action or '-'}, status {b.status or '-'}, "
                    f"reply {b.reply_code or '-'}, reason {b.reason} "
                    f"({'hard' if b.hard else 'soft'})\n"
                    f"    diagnostic: {b.diagnostic[:300] or '-'}\n    why: {b.why or '-'}\n"
                )
        else:
            out.write(f"{path}: {report.kind}\n")
            for b in report.bounces:
                out.write(
                    f"  {b.recipient} {b.action or '-'} {b.status or '-'} {b.reply_code or '-'} "
                    f"{b.reason} {'hard' if b.hard else 'soft'}\n"
                )
    out.flush()
    return status
