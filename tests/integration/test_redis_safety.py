"""Unsafe Redis settings are refused, not discovered: the worker at start and /healthz ask
Redis for ``appendonly`` and ``maxmemory-policy`` (private redis-servers configured each way)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from config.settings import Settings
from producers.redis_safety import inspect
from tests.support.api import serve
from tests.support.env import SECRET, worker_env
from tests.support.redis_server import RedisServer
from tests.support.services import REPO, background, celery_worker_args, wait_for
from worker.api.app import create_app

SAFE = ("--maxmemory-policy", "noeviction")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis that the test reconfigures with CONFIG SET."""
    started = RedisServer(tmp_path / "redis").start()
    yield started
    started.stop()


@pytest.mark.parametrize(
    ("appendonly", "policy", "problems"),
    [
        ("yes", "noeviction", []),
        ("no", "noeviction", ["appendonly is no"]),
        ("yes", "allkeys-lru", ["maxmemory-policy is allkeys-lru"]),
        ("yes", "volatile-ttl", ["maxmemory-policy is volatile-ttl"]),
        ("no", "allkeys-random", ["appendonly is no", "maxmemory-policy is allkeys-random"]),
    ],
)
def test_inspect_names_every_unsafe_setting(
    server: RedisServer, appendonly: str, policy: str, problems: list[str]
) -> None:
    import redis

    client = redis.Redis.from_url(server.url)
    client.config_set("appendonly", appendonly)
    client.config_set("maxmemory-policy", policy)
    found = inspect(client)
    client.close()
    assert [p.split(":")[0] for p in found.problems] == problems
    assert found.safe is (not problems) and found.unchecked is None


def _settings(url: str, tmp: Path, **extra: object) -> Settings:
    return Settings(
        broker_url=url,
        database_url=f"sqlite:///{tmp / 'store.db'}",
        secret_key=SECRET,
        _env_file=None,  # type: ignore[call-arg]
        **extra,  # type: ignore[arg-type]
    )


def _healthz(settings: Settings) -> httpx.Response:
    with serve(create_app(settings)) as url:
        return httpx.get(f"{url}/healthz", timeout=30)


def test_healthz_warns_or_refuses(tmp_path: Path) -> None:
    unsafe = RedisServer(tmp_path / "unsafe").start()
    safe = RedisServer(tmp_path / "safe", appendonly=True, extra_args=SAFE).start()
    try:
        res = _healthz(_settings(unsafe.url, tmp_path))
        assert res.status_code == 200  # a warning by default: the machine's Redis runs like this
        check = res.json()["checks"]["redis_persistence"]
        assert check.startswith("warning: redis: appendonly is no")

        res = _healthz(_settings(unsafe.url, tmp_path, strict_redis=True))
        assert res.status_code == 503 and res.json()["status"] == "unavailable"
        check = res.json()["checks"]["redis_persistence"]
        assert check.startswith("error: redis: appendonly is no") and "STRICT" in check
        assert str(unsafe.port) not in res.text  # no URL in what /healthz shows

        res = _healthz(_settings(safe.url, tmp_path, strict_redis=True))
        assert res.status_code == 200 and res.json()["checks"]["redis_persistence"] == "ok"

        # a Redis broker apart from the state Redis is checked as well
        res = _healthz(_settings(unsafe.url, tmp_path, redis_url=safe.url, strict_redis=True))
        assert res.status_code == 503
        assert res.json()["checks"]["redis_persistence"].startswith("error: broker: appendonly")
    finally:
        unsafe.stop()
        safe.stop()


def test_config_disabled_is_a_warning_even_when_strict(tmp_path: Path) -> None:
    hidden = RedisServer(tmp_path / "r", extra_args=("--rename-command", "CONFIG", "")).start()
    try:
        res = _healthz(_settings(hidden.url, tmp_path, strict_redis=True))
    finally:
        hidden.stop()
    assert res.status_code == 200
    check = res.json()["checks"]["redis_persistence"]
    assert check.startswith("warning: redis: could not check") and "CONFIG" in check


def test_strict_worker_line_refuses_to_start_on_unsafe_redis(tmp_path: Path) -> None:
    unsafe = RedisServer(tmp_path / "r", appendonly=True, extra_args=("--maxmemory-policy", "allkeys-lru")).start()  # fmt: skip
    env = worker_env(
        unsafe.url, f"sqlite:///{tmp_path / 'store.db'}", "smtp://127.0.0.1:9",
        MAILDISPATCH_STRICT_REDIS="true", MAILDISPATCH_MSC_PROCESSES="1",
    )  # fmt: skip
    try:
        out = subprocess.run(
            [sys.executable, "-m", "producers.cli", "worker", "msc"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        unsafe.stop()
    assert out.returncode != 0
    assert "refusing to start" in out.stderr and "maxmemory-policy is allkeys-lru" in out.stderr
    assert '"event":"redis_unsafe"' in out.stderr  # and the structured line for log search


@pytest.mark.parametrize(("strict", "safe"), [(False, False), (True, True)])
def test_worker_starts_when_safe_or_not_strict(tmp_path: Path, strict: bool, safe: bool) -> None:
    redis_server = RedisServer(
        tmp_path / "r", appendonly=safe, extra_args=SAFE if safe else ()
    ).start()
    env = worker_env(
        redis_server.url,
        f"sqlite:///{tmp_path / 'store.db'}",
        "smtp://127.0.0.1:9",
        MAILDISPATCH_STRICT_REDIS=str(strict).lower(),
    )
    log = tmp_path / "worker.log"
    try:
        with background(celery_worker_args("mail.msc"), env, log) as proc:
            wait_for(lambda: "ready" in log.read_text(errors="replace"), 60, what="worker ready")
            assert proc.poll() is None
    finally:
        redis_server.stop()
    warned = '"event":"redis_unsafe"' in log.read_text(errors="replace")
    assert warned is (not safe)
