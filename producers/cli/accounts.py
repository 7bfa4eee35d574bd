"""``maildispatch accounts ...``: connected Gmail accounts, custom SMTP servers, preferences.

Secrets are read from stdin (a prompt on a terminal), never from arguments: arguments end up
in shell history and in ``ps``. Nothing here prints a secret.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from config.channels import CHANNELS, DEFAULT_CHANNEL, OWNER_ACCOUNT
from config.redisconn import connect
from producers.cli.common import refused


def register(sub: argparse._SubParsersAction) -> None:
    """Declare ``accounts`` and its subcommands."""
    p = sub.add_parser("accounts", help="connected Gmail accounts and custom SMTP servers")
    acts = p.add_subparsers(dest="accounts_action", required=True)

    gmail = acts.add_parser("gmail", help="the owner's Gmail account")
    g = gmail.add_subparsers(dest="gmail_action", required=True)
    q = g.add_parser(
        "connect",
        help="connect (or replace) the owner's Gmail account",
        description="Reads the refresh token from stdin (first line); with "
        "--client-secret-stdin the client secret is the next line. Without --client-id the "
        "deployment's MAILDISPATCH_GOOGLE_CLIENT_ID / _SECRET are used.",
    )
    q.add_argument("--owner", required=True)
    q.add_argument("--email", required=True, help="the Gmail address: every From becomes it")
    q.add_argument("--refresh-token-stdin", action="store_true", required=True)
    q.add_argument("--client-id")
    q.add_argument("--client-secret-stdin", action="store_true")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_gmail_connect)

    smtp = acts.add_parser("smtp", help="the owner's custom SMTP server")
    s = smtp.add_subparsers(dest="smtp_action", required=True)
    q = s.add_parser(
        "set",
        help="set (or replace) the owner's SMTP server; password or OAuth grant from stdin",
        description="--auth password (default): the password is read from stdin. --auth "
        "xoauth2 --provider microsoft|google: log in with an OAuth grant (AUTH XOAUTH2; "
        "Microsoft 365 after Basic authentication ends); the refresh token is the first line "
        "of stdin and, with --client-secret-stdin, the client secret the next; the server "
        "defaults to the provider's (smtp.office365.com or smtp.gmail.com, port 587, "
        "starttls); without --client-id the deployment's MAILDISPATCH_<PROVIDER>_CLIENT_ID "
        "and _SECRET are used.",
    )
    q.add_argument("--owner", required=True)
    q.add_argument("--host", help="required with --auth password")
    q.add_argument("--port", type=int, help="required with --auth password")
    q.add_argument(
        "--security", choices=["starttls", "tls", "none"], help="required with --auth password"
    )
    q.add_argument("--username", required=True, help="with xoauth2: the mailbox's address")
    q.add_argument("--auth", choices=["password", "xoauth2"], default="password")
    q.add_argument("--provider", choices=["microsoft", "google"], help="with --auth xoauth2")
    q.add_argument("--password-stdin", action="store_true")
    q.add_argument("--refresh-token-stdin", action="store_true")
    q.add_argument("--client-id", help="with --auth xoauth2: the OAuth client of this account")
    q.add_argument("--client-secret-stdin", action="store_true")
    q.add_argument("--ca-file", help="PEM file of the CA to trust for this server (only it)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_smtp_set)

    q = acts.add_parser("prefer", help="the channel of the owner's jobs that name none")
    q.add_argument("--owner", required=True)
    q.add_argument("--channel", choices=CHANNELS, required=True)
    q.set_defaults(handler=cmd_prefer)

    q = acts.add_parser("list", help="owners, their preferred channel and accounts (no secrets)")
    q.add_argument("--owner")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_list)

    q = acts.add_parser("remove", help="forget an owner's Gmail account or SMTP server")
    q.add_argument("--owner", required=True)
    q.add_argument("--channel", choices=OWNER_ACCOUNT, required=True)
    q.set_defaults(handler=cmd_remove)

    q = acts.add_parser(
        "rotate-key",
        help="re-encrypt every stored secret under MAILDISPATCH_SECRET_KEY",
        description="Run after moving the old key to MAILDISPATCH_PREVIOUS_SECRET_KEYS.",
    )
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_rotate_key)

    q = acts.add_parser("sync", help="rewrite the producers' Redis copy of the preferences")
    q.set_defaults(handler=cmd_sync)


# -- helpers -----------------------------------------------------------------------------------
def _read_secret(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"{prompt}: ")
    return sys.stdin.readline().rstrip("\r\n")


def _context() -> tuple[Any, Any, Any]:
    from config.settings import get_settings
    from worker.accounts.vault import Vault
    from worker.store import open_store

    settings = get_settings()
    vault = Vault.from_settings(settings)  # refuses to run without a secret key
    return settings, open_store(settings.database_url), vault


def _redis(settings: Any) -> Any:

    return connect(settings.state_redis_url, socket_timeout=10)


# -- handlers ----------------------------------------------------------------------------------
def cmd_gmail_connect(args: argparse.Namespace) -> int:
    """Connect the owner's Gmail account with a refresh token read from stdin."""
    from worker.accounts.manage import AccountError, connect_gmail, summary

    settings, store, vault = _context()
    if args.client_secret_stdin and not args.client_id:
        return refused(ValueError("--client-secret-stdin needs --client-id"))
    if args.client_id and not args.client_secret_stdin:
        return refused(ValueError("--client-id needs --client-secret-stdin"))
    if not args.client_id and not (settings.google_client_id and settings.google_client_secret):
        return refused(
            ValueError(
                "no OAuth client: pass --client-id with --client-secret-stdin, or set "
                "MAILDISPATCH_GOOGLE_CLIENT_ID and MAILDISPATCH_GOOGLE_CLIENT_SECRET"
            )
        )
    refresh_token = _read_secret("refresh token")
    client_secret = _read_secret("client secret") if args.client_secret_stdin else None
    try:
        with store.session() as session:
            connect_gmail(
                session,
                vault,
                owner=args.owner,
                email=args.email,
                refresh_token=refresh_token,
                client_id=args.client_id,
                client_secret=client_secret,
            )
            shown = summary(session, args.owner.strip(), "gmail")
    except AccountError as exc:
        return refused(exc)
    _done(shown, args.json, f"Gmail account {shown.get('email')} connected for {args.owner}")
    return 0


def _smtp_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with the options of ``accounts smtp set``, if anything."""
    if args.auth == "password":
        if args.provider or args.refresh_token_stdin or args.client_id or args.client_secret_stdin:
            return "--provider, --refresh-token-stdin and --client-id go with --auth xoauth2"
        if not (args.host and args.port and args.security):
            return "--host, --port and --security are required with --auth password"
        if not args.password_stdin:
            return "--password-stdin is required with --auth password"
        return None
    if args.password_stdin:
        return "--auth xoauth2 takes no password: give --refresh-token-stdin"
    if not args.provider or not args.refresh_token_stdin:
        return "--auth xoauth2 needs --provider and --refresh-token-stdin"
    if bool(args.client_id) != bool(args.client_secret_stdin):
        return "--client-id and --client-secret-stdin go together"
    return None


def cmd_smtp_set(args: argparse.Namespace) -> int:
    """Set the owner's custom SMTP server: a password, or an OAuth grant, read from stdin."""
    from worker.accounts.manage import AccountError, OAuthLogin, set_smtp, summary

    if (problem := _smtp_usage(args)) is not None:
        return refused(ValueError(problem))
    settings, store, vault = _context()
    ca_pem = None
    if args.ca_file:
        try:
            ca_pem = Path(args.ca_file).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            return refused(ValueError(f"cannot read --ca-file: {exc}"))
    password = oauth = None
    if args.auth == "password":
        password = _read_secret("password")
    else:
        refresh_token = _read_secret("refresh token")
        client_secret = _read_secret("client secret") if args.client_secret_stdin else None
        oauth = OAuthLogin(args.provider, refresh_token, args.client_id, client_secret)
    try:
        with store.session() as session:
            row = set_smtp(
                session,
                vault,
                settings=settings,
                owner=args.owner,
                host=args.host,
                port=args.port,
                security=args.security,
                username=args.username,
                password=password,
                oauth=oauth,
                ca_pem=ca_pem,
            )
            where = f"{row.host}:{row.port}"
            shown = summary(session, args.owner.strip(), "smtp")
    except AccountError as exc:
        return refused(exc)
    if args.security == "none":  # only where MAILDISPATCH_SMTP_ALLOW_PLAINTEXT_AUTH is set
        print(
            "warning: --security none sends the password and every message unencrypted",
            file=sys.stderr,
        )
    _done(shown, args.json, f"SMTP server {where} set for {args.owner}")
    return 0


def _done(shown: dict[str, Any], as_json: bool, line: str) -> None:
    print(json.dumps(shown, default=str) if as_json else f"{line} (state {shown.get('state')})")


def cmd_prefer(args: argparse.Namespace) -> int:
    """Set the owner's preferred channel, and publish it to the producers."""
    from worker.accounts.manage import AccountError, mirror_preference, set_preference

    settings, store, _ = _context()
    try:
        with store.session() as session:
            set_preference(session, args.owner, args.channel)
    except AccountError as exc:
        return refused(exc)
    return _publish(settings, args.owner.strip(), args.channel, mirror_preference)


def _publish(settings: Any, owner: str, channel: str, mirror: Any) -> int:
    import redis

    client = _redis(settings)
    try:
        mirror(client, owner, channel)
    except redis.RedisError as exc:
        print(
            f"error: saved, but Redis did not take it ({type(exc).__name__}); jobs naming no "
            "channel keep the old preference until `maildispatch accounts sync` succeeds",
            file=sys.stderr,
        )
        return 1
    finally:
        client.close()
    print(f"{owner}: jobs that name no channel go to {channel}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Owners with their preferred channel and accounts."""
    from worker.accounts.manage import summaries

    _, store, _ = _context()
    with store.session() as session:
        rows = summaries(session, args.owner)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    for entry in rows:
        print(f"{entry['owner']}  (preferred channel: {entry['preferred_channel']})")
        for a in entry["accounts"]:
            where = a.get("email") or f"{a.get('username')} @ {a.get('host')}:{a.get('port')}"
            extra = f"  last error: {a['last_error']}" if a.get("last_error") else ""
            print(f"  {a['channel']:<6} {a['state']:<16} {where}{extra}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Forget an owner's account; a preference for it falls back to msc."""
    from worker.accounts.manage import AccountError, mirror_preference, remove

    settings, store, _ = _context()
    try:
        with store.session() as session:
            removed, reset = remove(session, args.owner, args.channel)
    except AccountError as exc:
        return refused(exc)
    if not removed:
        print(f"{args.owner} has no {args.channel} account", file=sys.stderr)
        return 1
    print(f"removed the {args.channel} account of {args.owner}")
    if reset:
        return _publish(settings, args.owner, DEFAULT_CHANNEL, mirror_preference)
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    """Re-encrypt every stored secret under the current key."""
    from worker.accounts.manage import rotate_key

    _, store, vault = _context()
    with store.session() as session:
        result = rotate_key(session, vault)
    if args.json:
        print(json.dumps(result.__dict__))
    else:
        print(f"re-encrypted {result.rotated}, already current {result.already_current}")
    for name in result.unreadable:
        print(
            f"cannot decrypt {name}: list the old key in MAILDISPATCH_PREVIOUS_SECRET_KEYS, "
            "or connect the account again",
            file=sys.stderr,
        )
    return 1 if result.unreadable else 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Rewrite the Redis copy of every preference from the store."""
    from worker.accounts.manage import mirror_all

    settings, store, _ = _context()
    client = _redis(settings)
    try:
        with store.session() as session:
            count = mirror_all(client, session)
    finally:
        client.close()
    print(f"published {count} preference(s)")
    return 0
