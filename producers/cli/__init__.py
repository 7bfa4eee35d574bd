"""The ``maildispatch`` command: one entry point, one argparse parser, a module per concern.

=============  ===========================================================================
module         commands
=============  ===========================================================================
send.py        ``send``, ``send-batch``, ``status``, ``cancel``
messages.py    ``messages list``
failed.py      ``failed list|show|resend|purge``, ``suppressions list|add|remove``
accounts.py    ``accounts gmail connect``, ``accounts smtp set``, ``accounts prefer|list|remove``,
               ``accounts rotate-key|sync``
webhooks.py    ``webhooks add|list|remove|enable|replay``
bounces.py     ``bounce-server``, ``bounce-poll``, ``bounces parse``, ``bounces dead list|retry|drop``
api.py         ``api``, ``api-keys create|list|revoke``, ``flower``
operate.py     ``worker``, ``scheduler``, ``db upgrade``, ``dkim record``, ``demo``
=============  ===========================================================================

Each module's ``register(subparsers)`` only declares arguments and imports nothing but
``config`` and ``producers``; a handler imports the worker modules it needs when it runs. So the
bare package (a producing service's install) lists every command and runs the send commands;
the others say which extra to install.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from config.settings import ConfigurationError
from producers.cli import (
    accounts,
    api,
    bounces,
    domains,
    failed,
    messages,
    operate,
    send,
    webhooks,
)

#: the command modules, in the order ``maildispatch --help`` lists their commands
MODULES = (send, messages, failed, accounts, domains, webhooks, bounces, api, operate)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="maildispatch",
        description="Queue-based mail dispatcher: producer and operator commands.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``maildispatch`` console script."""
    parser = build_parser()
    # `worker` and `flower` pass the options they do not know on to Celery and Flower, wherever
    # they stand (a trailing REMAINDER would also swallow their own options after the channel)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not hasattr(args, "passed_on"):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:
        args.passed_on = [a for a in unknown if a != "--"]
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
