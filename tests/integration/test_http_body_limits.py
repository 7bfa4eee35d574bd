"""Every route that takes a body refuses one larger than MAILDISPATCH_API_MAX_BODY_BYTES (413)
before reading it whole, and before the API key is checked: declared or streamed, nothing is
created. Real uvicorn, real Redis, a real SQLite store (as tests/integration/test_http_api.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from config.settings import Settings
from tests.support.api import bearer, new_key, serve
from tests.support.env import SECRET
from worker.api.app import create_app
from worker.message.unsubscribe import make_token
from worker.store import open_store, repo

CAP = 64 * 1024
OWNER = "acct-bodies"


@pytest.fixture
def client(redis_client: redis.Redis, redis_url: str, tmp_path: Any) -> Iterator[tuple[Any, ...]]:
    settings = Settings(
        broker_url=redis_url,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        secret_key=SECRET,
        api_max_body_bytes=CAP,
        _env_file=None,  # type: ignore[call-arg]
    )
    store = open_store(settings.database_url)
    key = new_key(store, "svc")
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c, key, store
    store.dispose()


def padded(data: dict[str, Any]) -> bytes:
    """Valid JSON, ten times the cap (trailing white space)."""
    return json.dumps(data).encode() + b" " * (10 * CAP)


def streamed(data: bytes) -> Iterator[bytes]:
    """The same bytes without a Content-Length: counted as they are read."""
    for i in range(0, len(data), 8192):
        yield data[i : i + 8192]


@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("POST", "/v1/suppressions", {"owner": OWNER, "address": "x@example.org"}),
        ("POST", "/v1/webhooks", {"owner": OWNER, "url": "https://hooks.example.com/in"}),
        ("PUT", f"/v1/accounts/{OWNER}/preferred", {"channel": "msc"}),
    ],
)
def test_json_routes_refuse_a_body_over_the_cap(
    client: tuple[Any, ...], method: str, path: str, data: dict[str, Any]
) -> None:
    c, key, store = client
    headers = bearer(key) | {"content-type": "application/json"}
    for body in (padded(data), streamed(padded(data))):
        res = c.request(method, path, content=body, headers=headers)
        assert res.status_code == 413, (res.status_code, res.text[:300])
    unsigned = c.request(method, path, content=padded(data), headers={"authorization": "Bearer x"})
    assert unsigned.status_code == 413  # refused before the key is even looked at
    with store.session() as s:
        assert repo.list_suppressions(s, OWNER) == []
    # within the cap, the same request works
    ok = c.request(method, path, content=json.dumps(data).encode(), headers=headers)
    assert ok.status_code < 300, ok.text


def test_one_click_unsubscribe_refuses_a_body_over_the_cap(client: tuple[Any, ...]) -> None:
    c, _, store = client
    token = make_token(SECRET, str(uuid.uuid4()), OWNER, "reader@example.org")
    body = b"List-Unsubscribe=One-Click&pad=" + b"a" * (10 * CAP)
    res = c.post(f"/u/{token}", content=body)
    with store.session() as s:
        added = [x.address for x in repo.list_suppressions(s, OWNER)]
    assert (res.status_code, added) == (413, [])
    res = c.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click")
    assert res.status_code == 200
