"""A producing service installs the bare package: it enqueues without the worker's dependencies.

The package is built from a copy of the tree into a fresh virtual environment, with nothing
but what ``pyproject.toml`` asks for the bare install, resolved from the package index as a
user's ``pip install maildispatch`` would be.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from config import keys
from tests.support.env import worker_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]

#: what only the worker, the store or the HTTP application need
NOT_FOR_PRODUCERS = (
    "aiormq",
    "aiosmtpd",
    "aiosmtplib",
    "alembic",
    "dkimpy",
    "fastapi",
    "flower",
    "google-auth",
    "httpx",
    "psycopg",
    "sqlalchemy",
    "uvicorn",
)

SEND = """
import sys
from producers.client import Dispatcher
d = Dispatcher()
print(d.send({"owner": "acme", "identity": "Acme <support@acme.example>",
              "to": ["someone@example.org"], "subject": "Hi", "text": "Body\\n"}))
d.close()
"""


def test_the_bare_package_enqueues_without_the_workers_dependencies(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    src = tmp_path / "src"
    for name in ("config", "producers", "worker"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", str(src)], check=True, timeout=800, cwd=tmp_path
    )
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    installed = {row["name"].lower() for row in json.loads(listed.stdout)}
    assert {"maildispatch", "celery", "kombu", "redis", "pydantic"} <= installed
    assert not installed & set(NOT_FOR_PRODUCERS), sorted(installed & set(NOT_FOR_PRODUCERS))

    env = worker_env(redis_url, "sqlite:///unused.db", "smtp://127.0.0.1:9")
    sent = subprocess.run(
        [python, "-c", SEND], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert sent.returncode == 0, sent.stderr
    job_id = sent.stdout.strip().splitlines()[-1]
    # queued, and its task message on the msc queue (the urgent lane of a single send)
    assert redis_client.hget(keys.job(job_id), "state") == b"queued"
    assert any(job_id.encode() in m for m in redis_client.lrange("mail.msc", 0, -1))

    # an operator command says what to install instead of a traceback
    failed = subprocess.run(
        [venv / "bin" / "maildispatch", "failed", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert failed.returncode == 69, failed.stderr
    assert "maildispatch[worker]" in failed.stderr and "Traceback" not in failed.stderr
