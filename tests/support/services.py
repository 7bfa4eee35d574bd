"""Reaching the machine's services: skip when missing locally, fail when missing in CI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from worker.consume.supervisor import celery_command

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES_URL = os.environ.get(
    "MAILDISPATCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def need(service: str, reachable: bool) -> None:
    """Skip (locally) or fail (CI=true) when a required service is missing."""
    if reachable:
        return
    if IN_CI:
        pytest.fail(f"{service} is required in CI and is not reachable")
    pytest.skip(f"{service} not reachable")


def port_open(host: str, port: int) -> bool:
    """Does something listen on host:port?"""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> None:  # type: ignore[no-untyped-def]
    """Poll until ``predicate()`` is truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def background(
    args: list[str], env: Mapping[str, str], log: Path, cwd: Path = REPO
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output in ``log``; terminated, then killed, at exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=dict(env), stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def celery_worker_args(queue: str, concurrency: int = 1, pool: str = "solo") -> list[str]:
    """The Procfile's worker command line, for one queue."""
    return celery_command(queue, "-c", str(concurrency), "-l", "INFO", pool=pool)


def scheduler_args() -> list[str]:
    """The Procfile's scheduler command line."""
    return [sys.executable, "-m", "producers.cli", "scheduler"]
