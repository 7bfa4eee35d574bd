"""``api``, ``api-keys create|list|revoke`` and ``flower``: the HTTP side of a deployment."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from config.settings import ConfigurationError, get_settings


def register(sub: argparse._SubParsersAction) -> None:
    """Declare ``api``, ``api-keys`` and ``flower``."""
    p = sub.add_parser("api", help="serve the HTTP API and the Failed Sends page")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        help="proxies trusted for X-Forwarded-Proto/-For (for the cookie's Secure flag)",
    )
    p.set_defaults(handler=cmd_api)

    p = sub.add_parser("api-keys", help="API keys of the services that call the HTTP API")
    keys = p.add_subparsers(dest="action", required=True)
    q = keys.add_parser("create", help="create a key and print it once")
    q.add_argument("--name", required=True, help="the calling service")
    q.add_argument("--scope", default="send,read", help="comma-separated: send, read")
    q.add_argument(
        "--owner", help="only this owner's jobs, state and Failed Sends (default: every owner)"
    )
    q.add_argument("--json", action="store_true", help="print JSON")
    q = keys.add_parser("list", help="every key (never the key itself)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = keys.add_parser("revoke", help="revoke a key at once")
    q.add_argument("key", help="the key's id or its shown prefix (md_xxxxxxxx)")
    q.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_api_keys)

    p = sub.add_parser(
        "flower",
        help="Flower, with basic auth from MAILDISPATCH_FLOWER_BASIC_AUTH",
        description="Other options are passed on to Flower.",
    )
    p.add_argument("--port", type=int, default=5555)
    p.add_argument("--address", default="127.0.0.1")
    p.set_defaults(handler=cmd_flower, passed_on=[])


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the API with uvicorn (one process: counters and caches are per process)."""
    import uvicorn

    from worker.api.app import create_app
    from worker.observe.logging import configure_logging
    from worker.store import open_store

    settings = get_settings()
    settings.require_secret_key()
    configure_logging(settings)
    open_store(settings.database_url)  # migrate now: a broken database URL fails at start
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_config=None,  # uvicorn logs through the root logger configured above
        access_log=False,  # worker/api/core.py logs one http_request event per request
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
        server_header=False,
    )
    return 0


def _key_dict(info: Any) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "prefix": info.prefix,
        "scopes": sorted(info.scopes),
        "owner": info.owner,
        "created_at": info.created_at.isoformat(),
        "last_used_at": info.last_used_at.isoformat() if info.last_used_at else None,
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
    }


def cmd_api_keys(args: argparse.Namespace) -> int:
    """Create, list or revoke API keys."""
    from pydantic import TypeAdapter, ValidationError

    from producers.job import Line200
    from worker.store import open_store
    from worker.store.apikeys import InvalidScopes, create_key, list_keys, parse_scopes, revoke_key

    store = open_store(get_settings().database_url)
    if args.action == "create":
        try:
            scopes = parse_scopes(args.scope)
        except InvalidScopes as exc:
            print(f"error: --scope: {exc}", file=sys.stderr)
            return 2
        owner = None
        if args.owner is not None:
            try:
                owner = TypeAdapter(Line200).validate_python(args.owner)
            except ValidationError as exc:
                message = exc.errors()[0]["msg"].removeprefix("Value error, ")
                print(f"error: --owner: {message}", file=sys.stderr)
                return 2
        with store.session() as session:
            key, info = create_key(session, args.name, scopes, owner)
        if args.json:
            print(json.dumps(_key_dict(info) | {"key": key}))
        else:
            print(key)
            only = f", owner {owner} only" if owner else ""
            print(
                f"API key {info.prefix}… for {info.name} ({','.join(sorted(scopes))}{only}); "
                "it is shown only now: only a hash is stored",
                file=sys.stderr,
            )
        return 0
    with store.session() as session:
        found = list_keys(session) if args.action == "list" else revoke_key(session, args.key)
        rows = [_key_dict(i) for i in found]
    if args.action == "revoke" and not rows:
        print(f"no active key {args.key}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        state = f"revoked {r['revoked_at'][:19]}" if r["revoked_at"] else "active"
        used = (r["last_used_at"] or "never")[:19]
        owner = f"owner {r['owner']}" if r["owner"] else "every owner"
        print(
            f"{r['id']:>4} {r['prefix']:<12} {r['name']:<24} {','.join(r['scopes']):<10} "
            f"{owner:<20} last used {used:<19} {state}"
        )
    return 0


def cmd_flower(args: argparse.Namespace) -> int:
    """Replace this process with Flower for ``worker.app``, refusing to run without a password."""
    auth = get_settings().flower_basic_auth
    credentials = auth.get_secret_value().strip() if auth else ""
    if not credentials or any(":" not in pair for pair in credentials.split(",")):
        raise ConfigurationError(
            "MAILDISPATCH_FLOWER_BASIC_AUTH must be set to user:password (comma-separated for "
            "several); Flower shows every task and is not run without authentication"
        )
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "flower",
        f"--port={args.port}",
        f"--address={args.address}",
        *args.passed_on,
    ]
    # Flower reads FLOWER_* variables; passing the password there keeps it out of `ps` output
    env = {**os.environ, "FLOWER_BASIC_AUTH": credentials}
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)  # noqa: S606 (our own argument list)
    return 0  # not reached
