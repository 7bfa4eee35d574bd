"""``worker``, ``scheduler``, ``db upgrade``, ``dkim record``, ``demo``: running a deployment."""

from __future__ import annotations

import argparse
import json
from typing import Any

from config.channels import CHANNELS
from config.settings import get_settings


def register(sub: argparse._SubParsersAction) -> None:
    """Declare ``worker``, ``scheduler``, ``db``, ``dkim`` and ``demo``."""
    p = sub.add_parser(
        "worker",
        help="delivery workers for a channel, or the webhook deliverer (events), one process "
        "per core (Procfile)",
        description="Other options (e.g. -l DEBUG) are passed on to celery worker.",
    )
    p.add_argument("channel", choices=[*CHANNELS, "events"])
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        help="worker processes (default MAILDISPATCH_<CHANNEL>_PROCESSES, else one per core)",
    )
    p.set_defaults(handler=cmd_worker, passed_on=[])

    p = sub.add_parser("scheduler", help="run the retry scheduler")
    p.set_defaults(handler=cmd_scheduler)

    p = sub.add_parser("db", help="the database schema")
    p.add_argument("action", choices=["upgrade"], help="bring the schema up to date")
    p.set_defaults(handler=cmd_db)

    p = sub.add_parser("dkim", help="the DKIM key of the MSC domain")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("record", help="the DNS record to publish, self-checked")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_dkim_record)

    p = sub.add_parser("demo", help="run the main job on the embedded defaults")
    p.set_defaults(handler=cmd_demo)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the line's worker processes (a channel's, or the events line's) until stopped."""
    from worker.consume.supervisor import Supervisor, processes_for

    get_settings().require_secret_key()
    count = processes_for(args.channel, args.processes)
    return Supervisor(args.channel, count, list(args.passed_on)).run()


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


def cmd_db(args: argparse.Namespace) -> int:
    """Bring the database schema up to date."""
    from worker.store.db import Store

    Store(get_settings().database_url)
    print("database is up to date")
    return 0


def cmd_dkim_record(args: argparse.Namespace) -> int:
    """Print the record to publish and the result of the self-check."""
    settings = get_settings()
    if not (settings.dkim_private_key_file and settings.dkim_selector):
        print("DKIM is not configured: set MAILDISPATCH_DKIM_PRIVATE_KEY_FILE and _SELECTOR")
        return 1
    from worker.message.dkim import DkimKey
    from worker.message.dkim_record import check

    key = DkimKey.from_file(
        settings.dkim_private_key_file, settings.msc_domain, settings.dkim_selector
    )
    name, record, verified = check(key.private_key, settings.msc_domain, settings.dkim_selector)
    result: dict[str, Any] = {"name": name, "type": "TXT", "value": record, "verified": verified}
    if args.json:
        print(json.dumps(result))
    else:
        print(f'{name}. IN TXT "{record}"')
        print("self-check:", "a signed sample verifies with dkimpy" if verified else "FAILED")
    return 0 if verified else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the main job end to end on the embedded defaults."""
    from worker.demo import run_demo

    return run_demo()
