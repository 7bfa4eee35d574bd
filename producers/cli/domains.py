"""``domains add|list|show|verify|sync`` and ``identities add|list``: what an owner sends as on
MSC (worker/domains/).

``domains add`` answers the DNS records to publish; ``verify`` looks them up (the system's
resolver, or ``MAILDISPATCH_DNS_NAMESERVERS``); MSC signs an identity's mail as its domain once
verified. ``identities add`` mails a confirmation link to a single address; with
``MAILDISPATCH_REQUIRE_VERIFIED_IDENTITIES`` MSC takes only identities verified one way or the
other.
"""

from __future__ import annotations

import argparse
from typing import Any

from config.redisconn import connect
from config.settings import get_settings
from producers.cli.common import print_json, refused


def register(sub: argparse._SubParsersAction) -> None:
    """Declare ``domains``."""
    p = sub.add_parser("domains", help="sending domains: add, list, show, verify (DKIM, DMARC)")
    acts = p.add_subparsers(dest="domains_action", required=True)
    q = acts.add_parser("add", help="register a domain for an owner; prints the DNS records")
    q.add_argument("--owner", required=True)
    q.add_argument("--domain", required=True)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_add)
    q = acts.add_parser("list", help="domains, their state and records")
    q.add_argument("--owner", help="one owner's")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_list)
    q = acts.add_parser("show", help="one domain, its records and their state")
    q.add_argument("domain")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_show)
    q = acts.add_parser("verify", help="look the records up in DNS now (exit 1 if not verified)")
    q.add_argument("domain")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_verify)
    q = acts.add_parser("remove", help="forget a domain and its keys (the operator signs again)")
    q.add_argument("domain")
    q.set_defaults(handler=cmd_remove)
    q = acts.add_parser("sync", help="rewrite the producers' Redis copy of who may send as what")
    q.set_defaults(handler=cmd_sync)

    p = sub.add_parser("identities", help="single addresses an owner sends as: confirm by mail")
    acts = p.add_subparsers(dest="identities_action", required=True)
    q = acts.add_parser("add", help="mail a confirmation link to an address (valid 7 days)")
    q.add_argument("--owner", required=True)
    q.add_argument("--address", required=True)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_identity_add)
    q = acts.add_parser("list", help="addresses and whether they are confirmed")
    q.add_argument("--owner", help="one owner's")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_identity_list)


def _context() -> tuple[Any, Any, Any]:
    from worker.accounts.vault import Vault
    from worker.store import open_store

    settings = get_settings()
    return settings, open_store(settings.database_url), Vault.from_settings(settings)


def _print(shown: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(shown)
        return
    print(f"{shown['domain']} ({shown['owner']}): {shown['state']}")
    for r in shown["records"]:
        print(f"  {r['type']:<5} {r['name']}  {r['value']}  [{r['state']}]")


def cmd_add(args: argparse.Namespace) -> int:
    """Register a domain and print the records to publish."""
    from worker.domains import manage

    settings, store, vault = _context()
    try:
        with store.session() as session:
            shown = manage.shown(manage.add(session, vault, args.owner, args.domain), settings)
    except manage.DomainError as exc:
        return refused(exc)
    _print(shown, args.json)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Every domain (an owner's)."""
    from worker.domains import manage

    settings, store, _ = _context()
    with store.session() as session:
        rows = [manage.shown(r, settings) for r in manage.listed(session, args.owner)]
    if args.json:
        print_json(rows)
    else:
        for shown in rows:
            _print(shown, False)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """One domain."""
    return _one(args, verify=False)


def cmd_verify(args: argparse.Namespace) -> int:
    """Look the domain's records up now; exit 1 while it is not verified."""
    return _one(args, verify=True)


def _one(args: argparse.Namespace, verify: bool) -> int:
    from worker.domains import manage

    settings, store, _ = _context()
    with store.session() as session:
        row = manage.get(session, args.domain)
        if row is None:
            return refused(LookupError(f"no domain {args.domain}"), 1)
        if verify:
            from worker.domains.senders import mirror_domain

            mirror_domain(_redis(settings), manage.verify(row, settings))
        shown = manage.shown(row, settings)
    _print(shown, args.json)
    return 0 if not verify or shown["state"] == manage.VERIFIED else 1


def _redis(settings: Any) -> Any:

    return connect(settings.state_redis_url, socket_timeout=10)


def cmd_sync(args: argparse.Namespace) -> int:
    """Rewrite the Redis set producers check identities against."""
    from worker.domains.senders import mirror_all

    settings, store, _ = _context()
    with store.session() as session:
        count = mirror_all(_redis(settings), session)
    print(f"{count} verified domain(s) and confirmed address(es) published")
    return 0


def cmd_identity_add(args: argparse.Namespace) -> int:
    """Record an address and mail its confirmation link."""
    from producers.cli.common import make_dispatcher
    from worker.domains import senders
    from worker.domains.manage import DomainError

    settings, store, _ = _context()
    try:
        with store.session() as session:
            row = senders.request(session, settings, args.owner, args.address)
            shown = senders.shown(row)
    except DomainError as exc:
        return refused(exc)
    dispatcher = make_dispatcher()
    try:
        shown["confirmation_job"] = senders.mail_link(
            dispatcher, settings, str(shown["owner"]), str(shown["address"])
        )
    except DomainError as exc:
        return refused(exc)
    finally:
        dispatcher.close()
    if args.json:
        print_json(shown)
    else:
        print(f"confirmation link mailed to {shown['address']} (job {shown['confirmation_job']})")
    return 0


def cmd_identity_list(args: argparse.Namespace) -> int:
    """Addresses and their state."""
    from worker.domains import senders

    _, store, _ = _context()
    with store.session() as session:
        rows = [senders.shown(r) for r in senders.listed(session, args.owner)]
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            print(f"{r['owner']}  {r['address']}  {r['state']}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Forget a domain."""
    from worker.domains import manage
    from worker.domains.senders import mirror_domain

    settings, store, _ = _context()
    with store.session() as session:
        row = manage.get(session, args.domain)
        if row is None:
            return refused(LookupError(f"no domain {args.domain}"), 1)
        mirror_domain(_redis(settings), row, removed=True)
        manage.remove(session, row)
    print(f"{args.domain} removed")
    return 0
