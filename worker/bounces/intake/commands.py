"""CLI subcommands ``bounce-server``, ``bounce-poll`` and ``bounces parse`` (producers/cli.py).

``register`` only declares arguments; each handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    """Add the bounce subcommands to the ``maildispatch`` parser."""
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

    p = sub.add_parser("bounces", help="bounce reports")
    bs = p.add_subparsers(dest="action", required=True)
    q = bs.add_parser("parse", help="classify saved bounce messages")
    q.add_argument("files", nargs="+", metavar="FILE")
    q.add_argument("--json", action="store_true", help="one JSON object per file")
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
    import redis

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
    client = redis.Redis.from_url(
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
        from worker.bounces.intake.deadcli import dead_command

        return dead_command(args)
    from worker.bounces.classify.cli import parse_files_command

    return parse_files_command(list(args.files), args.json)
