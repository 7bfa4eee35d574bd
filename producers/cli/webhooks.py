"""``webhooks add|list|remove|enable|replay``: the endpoints events are pushed to."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from config.events import EVENT_TYPES
from config.redisconn import connect
from config.settings import get_settings
from producers.cli.common import print_json, refused


def register(sub: argparse._SubParsersAction) -> None:
    """Declare ``webhooks``."""
    p = sub.add_parser("webhooks", help="webhook endpoints: add, list, remove, enable, replay")
    acts = p.add_subparsers(dest="webhooks_action", required=True)
    q = acts.add_parser("add", help="add an endpoint; prints its signing secret once")
    q.add_argument("--owner", required=True, help="whose events it receives; * for every owner's")
    q.add_argument("--url", required=True, help="where events are POSTed (http or https)")
    q.add_argument(
        "--events", help=f"comma-separated types (default: all): {', '.join(EVENT_TYPES)}"
    )
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_add)
    q = acts.add_parser("list", help="endpoints, their state and why one is disabled")
    q.add_argument("--owner", help="one owner's")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_list)
    q = acts.add_parser("remove", help="delete an endpoint (its undelivered events are dropped)")
    q.add_argument("id", type=int, help="the endpoint's id")
    q.set_defaults(handler=cmd_remove)
    q = acts.add_parser("enable", help="deliver to a disabled endpoint again")
    q.add_argument("id", type=int, help="the endpoint's id")
    q.set_defaults(handler=cmd_enable)
    q = acts.add_parser("replay", help="send an endpoint every event since a time again")
    q.add_argument("id", type=int, help="the endpoint's id")
    q.add_argument("--since", required=True, help="ISO 8601 time (UTC unless it says otherwise)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_replay)


def _context() -> tuple[Any, Any, Any]:
    from worker.accounts.vault import Vault
    from worker.store import open_store

    settings = get_settings()
    return settings, open_store(settings.database_url), Vault.from_settings(settings)


def cmd_add(args: argparse.Namespace) -> int:
    """Add an endpoint and print its id and secret."""
    from worker.channels.netguard import NetworkPolicy
    from worker.webhooks import endpoints

    settings, store, vault = _context()
    owner = args.owner.strip()
    events = [e.strip() for e in args.events.split(",") if e.strip()] if args.events else None
    try:
        with store.session() as session:
            policy = NetworkPolicy.from_settings(settings)
            row, secret = endpoints.add(session, vault, policy, owner, args.url, events)
            endpoint_id = row.id
    except endpoints.InvalidEndpoint as exc:
        return refused(exc)
    if args.json:
        print_json({"id": endpoint_id, "secret": secret})
    else:
        print(f"endpoint {endpoint_id}: secret {secret} (shown only now)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List endpoints (never their secrets)."""
    from worker.webhooks import endpoints

    _, store, _ = _context()
    with store.session() as session:
        rows = [endpoints.shown(r) for r in endpoints.listed(session, args.owner)]
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        why = f"  ({r['disabled_reason']})" if r["disabled_reason"] else ""
        kinds = ",".join(r["events"] or ["all events"])
        print(f"{r['id']:>4} {r['owner'] or '*':<16} {r['state']:<8} {r['url']}  {kinds}{why}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Delete an endpoint."""
    from worker.webhooks import endpoints

    _, store, _ = _context()
    with store.session() as session:
        removed = endpoints.remove(session, args.id)
    print(f"removed endpoint {args.id}" if removed else f"no endpoint {args.id}", file=sys.stderr)
    return 0 if removed else 1


def cmd_enable(args: argparse.Namespace) -> int:
    """Enable an endpoint again."""
    from worker.webhooks import endpoints

    _, store, _ = _context()
    with store.session() as session:
        found = endpoints.enable(session, args.id)
    print(f"endpoint {args.id} enabled" if found else f"no endpoint {args.id}", file=sys.stderr)
    return 0 if found else 1


def cmd_replay(args: argparse.Namespace) -> int:
    """Queue every event since a time for an endpoint again."""

    from worker.webhooks import endpoints
    from worker.webhooks.outbox import replay

    settings, store, _ = _context()
    try:
        since = datetime.fromisoformat(args.since)
    except ValueError:
        return refused(ValueError(f"--since: not an ISO 8601 time: {args.since!r}"))
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with store.session() as session:
        row = endpoints.get(session, args.id)
        endpoint = endpoints.endpoint_of(row) if row is not None else None
    if endpoint is None:
        print(f"no endpoint {args.id}", file=sys.stderr)
        return 1
    client = connect(settings.state_redis_url, socket_timeout=30)
    try:
        count = replay(client, endpoint, since.timestamp())
    finally:
        client.close()
    print_json({"id": args.id, "replayed": count}) if args.json else print(
        f"{count} event(s) queued again for endpoint {args.id}"
    )
    return 0
