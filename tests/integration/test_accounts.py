"""The accounts store on SQLite and PostgreSQL, the preference mirror in Redis, key rotation
through the CLI, and the worker's AsyncAccounts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from config import keys
from config.settings import Settings
from producers.client import Dispatcher
from tests.support.env import SECRET
from tests.support.redis_server import RedisServer
from tests.support.services import REPO
from worker.accounts import connected, manage
from worker.accounts.connected import AsyncAccounts, GmailAccount, SmtpAccount
from worker.accounts.manage import AccountError, OAuthLogin
from worker.accounts.vault import Vault
from worker.errors import PermanentError
from worker.store.db import Store
from worker.store.models import Account

VAULT = Vault(SECRET)
SETTINGS = Settings(
    secret_key=SECRET, google_client_id="deploy-client", google_client_secret="deploy-secret"
)


def _gmail(store: Store, owner: str = "acme", email: str = "ann@gmail.com", **kw: str) -> None:
    with store.session() as s:
        manage.connect_gmail(s, VAULT, owner=owner, email=email, refresh_token="1//rt", **kw)


def _smtp(store: Store, owner: str = "acme", password: str = "pw") -> None:  # noqa: S107
    with store.session() as s:
        manage.set_smtp(
            s,
            VAULT,
            settings=SETTINGS,
            owner=owner,
            host="smtp.example.net",
            port=587,
            security="starttls",
            username="ann",
            password=password,
        )


def test_one_gmail_account_per_owner_the_second_replaces_the_first(store: Store) -> None:
    _gmail(store, email="first@gmail.com")
    _gmail(store, email="second@gmail.com", client_id="own", client_secret="own-secret")
    with store.session() as s:
        (row,) = s.scalars(select(Account).where(Account.owner == "acme")).all()
        assert (row.address, row.client_id, row.revision, row.state) == (
            "second@gmail.com",
            "own",
            2,
            "connected",
        )
        loaded = connected.load(s, VAULT, SETTINGS, "gmail", "acme")
    assert loaded == GmailAccount("acme", "second@gmail.com", "own", "own-secret", "1//rt", 2)
    assert "own-secret" not in repr(loaded) and "1//rt" not in repr(loaded)


def test_gmail_without_own_client_uses_the_deployments(store: Store) -> None:
    _gmail(store)
    with store.session() as s:
        loaded = connected.load(s, VAULT, SETTINGS, "gmail", "acme")
    assert isinstance(loaded, GmailAccount)
    assert (loaded.client_id, loaded.client_secret) == ("deploy-client", "deploy-secret")
    with store.session() as s, pytest.raises(PermanentError, match="OAuth client") as info:
        connected.load(s, VAULT, Settings(secret_key=SECRET), "gmail", "acme")
    assert info.value.kind == "config"


def test_smtp_account_and_its_server(store: Store) -> None:
    _smtp(store, password="first")
    _smtp(store, password="second")
    with store.session() as s:
        loaded = connected.load(s, VAULT, SETTINGS, "smtp", "acme")
    assert isinstance(loaded, SmtpAccount) and loaded.password == "second"
    server = loaded.server(5.0)
    assert (server.host, server.port, server.security, server.username) == (
        "smtp.example.net",
        587,
        "starttls",
        "ann",
    )
    assert "second" not in repr(loaded) and "second" not in repr(server)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"port": 0}, "port"),
        ({"security": "ssl"}, "security"),
        ({"host": "bad host"}, "host"),
        ({"password": ""}, "password"),
        ({"password": "a\nb"}, "password"),
        ({"ca_pem": "not a certificate"}, "PEM"),
        # user servers may not be this host or the networks behind it (netguard)
        ({"host": "127.0.0.1"}, "network"),
        ({"host": "127.9.9.9"}, "network"),
        ({"host": "localhost"}, "network"),
        ({"host": "mail.localhost."}, "network"),
        ({"host": "[::1]"}, "network"),
        ({"host": "0.0.0.0"}, "network"),
        ({"host": "10.20.30.40"}, "network"),
        ({"host": "172.31.0.5"}, "network"),
        ({"host": "192.168.1.1"}, "network"),
        ({"host": "100.100.100.200"}, "network"),
        ({"host": "169.254.169.254"}, "network"),
        ({"host": "fd00:ec2::254"}, "network"),
        ({"host": "fe80::1"}, "network"),
        ({"host": "::ffff:10.0.0.1"}, "network"),
        ({"host": "::ffff:7f00:1"}, "network"),
        ({"security": "none"}, "unencrypted"),
    ],
)
def test_smtp_input_is_checked(store: Store, kwargs: dict[str, object], words: str) -> None:
    args: dict[str, object] = {
        "owner": "acme",
        "host": "smtp.example.net",
        "port": 587,
        "security": "starttls",
        "username": "ann",
        "password": "pw",
    } | kwargs
    with store.session() as s, pytest.raises(AccountError, match=words):
        manage.set_smtp(s, VAULT, settings=SETTINGS, **args)  # type: ignore[arg-type]


def _oauth(store: Store, settings: Settings = SETTINGS, **kw: object) -> Account:
    login = OAuthLogin("microsoft", "M.rt-1", "app-id", "app-secret")
    args: dict[str, object] = {"owner": "acme", "username": "ann@contoso.example"} | kw
    with store.session() as s:
        row = manage.set_smtp(s, VAULT, settings=settings, oauth=login, **args)  # type: ignore[arg-type]
        s.expunge(row)
    return row


def test_xoauth2_defaults_to_the_providers_server_and_loads_a_grant(store: Store) -> None:
    row = _oauth(store)
    assert (row.host, row.port, row.security, row.auth, row.provider) == (
        "smtp.office365.com",
        587,
        "starttls",
        "xoauth2",
        "microsoft",
    )
    settings = Settings(secret_key=SECRET, microsoft_token_uri="https://login.test/t")
    with store.session() as s:
        loaded = connected.load(s, VAULT, settings, "smtp", "acme")
        (shown,) = manage.summaries(s, "acme")[0]["accounts"]
    assert isinstance(loaded, SmtpAccount) and loaded.password is None
    assert loaded.oauth is not None
    assert (loaded.oauth.token_uri, loaded.oauth.client_id, loaded.oauth.refresh_token) == (
        "https://login.test/t",
        "app-id",
        "M.rt-1",
    )
    assert loaded.oauth.scopes == ("https://outlook.office.com/SMTP.Send", "offline_access")
    assert "M.rt-1" not in repr(loaded) and "app-secret" not in repr(loaded)
    assert (shown["auth"], shown["provider"], shown["oauth_client"]) == (
        "xoauth2",
        "microsoft",
        "app-id",
    )
    assert "M.rt-1" not in json.dumps(shown) and "app-secret" not in json.dumps(shown)
    # a refused grant asks for a reconnection, not a new password
    with store.session() as s:
        assert connected.mark_failed(s, "smtp", "acme", None, "invalid_grant") == (
            "needs_reconnect"
        )
    with store.session() as s, pytest.raises(PermanentError, match="reconnect") as info:
        connected.load(s, VAULT, settings, "smtp", "acme")
    assert info.value.kind == "auth"


def test_a_password_after_xoauth2_forgets_the_grant(store: Store) -> None:
    _oauth(store)
    _smtp(store, password="pw2")
    with store.session() as s:
        loaded = connected.load(s, VAULT, SETTINGS, "smtp", "acme")
        (row,) = s.scalars(select(Account).where(Account.owner == "acme")).all()
    assert isinstance(loaded, SmtpAccount) and loaded.oauth is None and loaded.password == "pw2"
    assert (row.auth, row.provider, row.client_id) == ("password", None, None)


def test_keep_refresh_token_only_over_the_same_credentials(store: Store) -> None:
    _oauth(store)
    with store.session() as s:
        assert connected.keep_refresh_token(s, VAULT, "smtp", "acme", 1, "M.rt-2")
        assert not connected.keep_refresh_token(s, VAULT, "smtp", "acme", 7, "M.rt-old")
        loaded = connected.load(s, VAULT, SETTINGS, "smtp", "acme")
    assert isinstance(loaded, SmtpAccount) and loaded.oauth is not None
    assert loaded.oauth.refresh_token == "M.rt-2"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"username": "ann"}, "mailbox's address"),
        ({"settings": Settings(secret_key=SECRET)}, "MAILDISPATCH_MICROSOFT_CLIENT_ID"),
        ({"password": "pw"}, "either a password or an OAuth grant"),
        ({"host": "10.1.2.3"}, "network"),
    ],
)
def test_xoauth2_input_is_checked(store: Store, kwargs: dict[str, object], words: str) -> None:
    login = OAuthLogin("microsoft", "M.rt-1")  # the deployment's client
    kwargs = dict(kwargs)  # the parameters are shared by both stores' runs
    settings = kwargs.pop("settings", None) or Settings(
        secret_key=SECRET, microsoft_client_id="deploy", microsoft_client_secret="deploy-secret"
    )
    args: dict[str, object] = {"owner": "acme", "username": "ann@contoso.example"} | kwargs
    with store.session() as s, pytest.raises(AccountError, match=words):
        manage.set_smtp(s, VAULT, settings=settings, oauth=login, **args)  # type: ignore[arg-type]


def test_xoauth2_without_its_own_client_uses_the_deployments(store: Store) -> None:
    settings = Settings(
        secret_key=SECRET, microsoft_client_id="deploy", microsoft_client_secret="deploy-secret"
    )
    with store.session() as s:
        manage.set_smtp(
            s,
            VAULT,
            settings=settings,
            owner="acme",
            username="ann@contoso.example",
            oauth=OAuthLogin("microsoft", "M.rt-1"),
        )
        loaded = connected.load(s, VAULT, settings, "smtp", "acme")
        assert isinstance(loaded, SmtpAccount) and loaded.oauth is not None
        assert (loaded.oauth.client_id, loaded.oauth.client_secret) == ("deploy", "deploy-secret")
        # the deployment's client removed later: a clear configuration failure when sending
        with pytest.raises(PermanentError, match="MICROSOFT_CLIENT_ID") as info:
            connected.load(s, VAULT, Settings(secret_key=SECRET), "smtp", "acme")
    assert info.value.kind == "config"


def test_missing_account_is_a_config_failure(store: Store) -> None:
    with store.session() as s, pytest.raises(PermanentError, match="no Gmail account") as info:
        connected.load(s, VAULT, SETTINGS, "gmail", "nobody")
    assert info.value.kind == "config" and "accounts gmail connect" in info.value.text


def test_flagged_account_fails_fast_until_set_again(store: Store) -> None:
    _smtp(store)
    with store.session() as s:
        assert connected.mark_failed(s, "smtp", "acme", 1, "535 5.7.8 bad credentials") == (
            "auth_failed"
        )
        assert connected.mark_failed(s, "smtp", "acme", 1, "again") is None  # already flagged
    with store.session() as s, pytest.raises(PermanentError, match="auth_failed") as info:
        connected.load(s, VAULT, SETTINGS, "smtp", "acme")
    assert info.value.kind == "auth" and "535 5.7.8" in info.value.text
    _smtp(store)  # new credentials: connected again
    with store.session() as s:
        assert isinstance(connected.load(s, VAULT, SETTINGS, "smtp", "acme"), SmtpAccount)
        # a failure of the old credentials (revision 1) does not flag the new ones (2)
        assert connected.mark_failed(s, "smtp", "acme", 1, "late failure") is None
        assert manage.summaries(s, "acme")[0]["accounts"][0]["state"] == "connected"


def test_preferences_need_an_account_and_fall_back_on_remove(store: Store) -> None:
    with store.session() as s:
        assert manage.preferred_channel(s, "acme") == "msc"
        with pytest.raises(AccountError, match="connect one first"):
            manage.set_preference(s, "acme", "gmail")
    _gmail(store)
    with store.session() as s:
        manage.set_preference(s, "acme", "gmail")
        assert manage.preferred_channel(s, "acme") == "gmail"
        assert manage.remove(s, "acme", "smtp") == (False, False)
        assert manage.remove(s, "acme", "gmail") == (True, True)
        assert manage.preferred_channel(s, "acme") == "msc"


def test_summaries_never_show_a_secret(store: Store) -> None:
    _gmail(store, client_id="own", client_secret="client-secret-xyz")
    _smtp(store, password="password-xyz")
    with store.session() as s:
        manage.set_preference(s, "acme", "smtp")
        shown = manage.summaries(s)
    dumped = json.dumps(shown, default=str)
    assert "xyz" not in dumped and "1//rt" not in dumped
    assert shown[0]["preferred_channel"] == "smtp"
    assert [a["channel"] for a in shown[0]["accounts"]] == ["gmail", "smtp"]


def test_rotate_key_re_encrypts_every_row(store: Store) -> None:
    old = Vault("old-key-0123456789abcdef0123456789")
    with store.session() as s:
        manage.connect_gmail(s, old, owner="a", email="a@gmail.com", refresh_token="1//a")
        manage.set_smtp(
            s,
            old,
            settings=SETTINGS,
            owner="b",
            host="h",
            port=465,
            security="tls",
            username="u",
            password="p",
        )
    new = Vault("new-key-fedcba9876543210fedcba9876", ["old-key-0123456789abcdef0123456789"])
    with store.session() as s:
        result = manage.rotate_key(s, new)
    assert (result.rotated, result.already_current, result.unreadable) == (2, 0, [])
    only_new = Vault("new-key-fedcba9876543210fedcba9876")
    with store.session() as s:
        assert connected.load(s, only_new, SETTINGS, "smtp", "b").password == "p"  # type: ignore[union-attr]
        assert manage.rotate_key(s, new).already_current == 2


def test_preferences_are_mirrored_for_producers(
    tmp_path: Path, redis_client: redis.Redis, redis_url: str
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    _smtp(store)
    with store.session() as s:
        manage.set_preference(s, "acme", "smtp")
    redis_client.hset(keys.PREFERRED_CHANNEL, "stale-owner", "gmail")
    with store.session() as s:
        assert manage.mirror_all(redis_client, s) == 1
    assert redis_client.hgetall(keys.PREFERRED_CHANNEL) == {b"acme": b"smtp"}
    d = Dispatcher(Settings(secret_key=SECRET, broker_url=redis_url))
    job = {"identity": "a@x.example", "to": ["b@y.example"], "text": "t", "subject": "s"}
    resolved = d._resolve_channels([d.validate(job | {"owner": o}) for o in ("acme", "other")])
    assert [str(j.channel) for j in resolved] == ["smtp", "msc"]
    d.close()
    store.dispose()


def test_a_changed_preference_reaches_producers_at_once(tmp_path: Path) -> None:
    """Producers keep owners' preferred channels between sends; a change made through the
    mirror is used by the next send, also after the producer's watch or Redis itself was lost,
    and an unchanged preference is not asked of Redis again."""
    server = RedisServer(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url)
    d = Dispatcher(Settings(secret_key=SECRET, broker_url=server.url))
    job = {"identity": "a@x.example", "to": ["b@y.example"], "text": "t", "subject": "s"}

    def channel_of_a_send(owner: str = "acme") -> str:
        job_id = d.send(job | {"owner": owner})
        return client.hget(keys.job(str(job_id)), "channel").decode()  # type: ignore[union-attr]

    def lookups() -> int:
        return int(client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))

    try:
        assert channel_of_a_send() == "msc"
        for preferred in ("smtp", "gmail", "msc", "smtp", "gmail"):
            manage.mirror_preference(client, "acme", preferred)
            asked = lookups()
            assert [channel_of_a_send() for _ in range(5)] == [preferred] * 5
            assert lookups() - asked == 1  # asked after the change, then kept
        assert channel_of_a_send("other") == "msc"

        # the producer's watch is cut, and the preference changes while nobody listens
        watches = [c for c in client.client_list() if "t" in c["flags"]]
        assert len(watches) == 1
        client.client_kill_filter(_id=watches[0]["id"])
        manage.mirror_preference(client, "acme", "smtp")
        assert channel_of_a_send() == "smtp"

        # Redis restarts empty (no persistence): the preference is mirrored again, differently
        server.restart()
        client.close()
        client = redis.Redis.from_url(server.url)
        manage.mirror_preference(client, "acme", "gmail")
        assert channel_of_a_send() == "gmail"
        manage.mirror_preference(client, "acme", "msc")
        assert channel_of_a_send() == "msc"
    finally:
        d.close()
        client.close()
        server.stop()


def test_a_producer_whose_redis_user_may_not_watch_asks_every_time(tmp_path: Path) -> None:
    """An ACL user without CLIENT (no tracking): preferences are still right, asked each time,
    and the producer does not open a connection per send trying to watch."""
    server = RedisServer(tmp_path / "redis").start()
    admin = redis.Redis.from_url(server.url)
    admin.acl_setuser(
        "producer",
        enabled=True,
        nopass=True,
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-client"],
    )
    url = f"redis://producer@127.0.0.1:{server.port}/0"
    d = Dispatcher(Settings(secret_key=SECRET, broker_url=url))
    job = {"identity": "a@x.example", "to": ["b@y.example"], "text": "t", "subject": "s"}
    try:
        d.send(job | {"owner": "acme"})
        opened = int(admin.info("stats")["total_connections_received"])
        for preferred in ("smtp", "gmail", "msc") * 10:
            manage.mirror_preference(admin, "acme", preferred)
            job_id = d.send(job | {"owner": "acme"})
            assert admin.hget(keys.job(str(job_id)), "channel") == preferred.encode()
        assert int(admin.info("stats")["total_connections_received"]) - opened <= 3
    finally:
        d.close()
        admin.close()
        server.stop()


def test_async_accounts_share_one_read_and_flag_refusals(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    _gmail(store)
    worker_accounts = AsyncAccounts(SETTINGS, store)

    async def run() -> None:
        loaded = await asyncio.gather(*(worker_accounts.load("gmail", "acme") for _ in range(20)))
        assert all(a is loaded[0] for a in loaded)  # read once for a batch's jobs
        with pytest.raises(PermanentError) as info:
            await worker_accounts.load("smtp", "acme")
        assert info.value.kind == "config"
        await worker_accounts.auth_failed("gmail", "acme", PermanentError("invalid_grant"))
        with pytest.raises(PermanentError, match="needs_reconnect") as again:
            await worker_accounts.load("gmail", "acme")
        assert again.value.kind == "auth"

    asyncio.run(asyncio.wait_for(run(), 30))
    store.dispose()


def test_rotate_key_through_the_cli(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'store.db'}"
    base = {"PATH": "/usr/bin:/bin", "MAILDISPATCH_DATABASE_URL": database_url}

    def cli(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producers.cli", *args],
            env=base | env,
            cwd=REPO,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    old, new = "old-cli-key-0123456789abcdef012345", "new-cli-key-fedcba9876543210fedcba"
    out = cli(
        "accounts", "smtp", "set", "--owner", "acme", "--host", "smtp.example.net", "--port",
        "465", "--security", "tls", "--username", "ann", "--password-stdin",
        stdin="s3cret-pw\n", MAILDISPATCH_SECRET_KEY=old,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = cli("accounts", "rotate-key", "--json", MAILDISPATCH_SECRET_KEY=new)
    assert out.returncode == 1 and "cannot decrypt acme/smtp" in out.stderr  # old key missing
    out = cli(
        "accounts", "rotate-key", "--json",
        MAILDISPATCH_SECRET_KEY=new, MAILDISPATCH_PREVIOUS_SECRET_KEYS=old,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"rotated": 1, "already_current": 0, "unreadable": []}
    store = Store(database_url)
    with store.session() as s:
        loaded = connected.load(s, Vault(new), SETTINGS, "smtp", "acme")
    assert isinstance(loaded, SmtpAccount) and loaded.password == "s3cret-pw"
    store.dispose()
    out = cli("accounts", "list", "--json")  # no key, no vault: refused plainly
    assert out.returncode == 78 and "MAILDISPATCH_SECRET_KEY" in out.stderr
