"""One-click unsubscribe (RFC 8058): the headers a real MSC worker writes, the link the API
serves, and the next job to that person."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from producers.job import InvalidJob
from tests.support.api import serve
from tests.support.events import all_events
from tests.support.fleet import Fleet, running_fleet
from tests.support.relay import Relay
from worker.api.app import create_app
from worker.store import Store, repo

PUBLIC = "https://mail.example.test"
OWNER = "acct-unsub"


@pytest.fixture
def ufleet(tmp_path: Path, relay: Relay) -> Iterator[Fleet]:
    env = {"MAILDISPATCH_PUBLIC_URL": PUBLIC}
    with running_fleet(tmp_path, relay_url=relay.url, env=env) as fleet:
        yield fleet


def job(to: str, **extra: Any) -> dict[str, Any]:
    return {
        "owner": OWNER,
        "identity": "News <news@acme.example>",
        "to": [to],
        "subject": "Spring news",
        "text": "Hello",
        "unsubscribe": True,
    } | extra


def suppressed(fleet: Fleet) -> dict[str, str]:
    store = Store(fleet.database_url)
    try:
        with store.session() as s:
            return {x.address: x.reason for x in repo.list_suppressions(s, OWNER)}
    finally:
        store.dispose()


def test_the_link_unsubscribes_on_post_only(ufleet: Fleet, relay: Relay) -> None:
    sent = ufleet.dispatcher.send(job("Reader@Example.org"))
    assert ufleet.wait_final([sent], 30) == {str(sent): "sent"}
    (message,) = [m.message for m in relay.handler.messages]
    header = re.sub(r"\s+", " ", str(message["List-Unsubscribe"])).strip()  # unfolded
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    url, mailto = re.fullmatch(r"<([^>]+)>, <([^>]+)>", header).groups()  # type: ignore[union-attr]
    assert url.startswith(f"{PUBLIC}/u/")
    token = url.removeprefix(f"{PUBLIC}/u/")
    assert unquote(mailto) == f"mailto:u@bounces.operator.test?subject=unsubscribe {token}"

    with serve(create_app(ufleet.settings)) as api, httpx.Client(base_url=api) as client:
        page = client.get(f"/u/{token}")  # a mail scanner's fetch
        assert page.status_code == 200 and "reader@example.org" in page.text
        assert 'name="List-Unsubscribe" value="One-Click"' in page.text
        assert suppressed(ufleet) == {}

        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        assert client.post(f"/u/{forged}", content=b"List-Unsubscribe=One-Click").status_code == 404
        other = token.replace(token.split(".")[0], token.split(".")[0][:-1] + "x")
        assert client.post(f"/u/{other}", content=b"List-Unsubscribe=One-Click").status_code == 404
        assert client.post(f"/u/{token}", content=b"").status_code == 400
        assert suppressed(ufleet) == {}

        form = {"List-Unsubscribe": "One-Click"}  # as mail clients and the page's button send it
        done = client.post(f"/u/{token}", data=form)
        assert done.status_code == 200 and "reader@example.org" in done.text
        assert client.post(f"/u/{token}", data=form).status_code == 200  # again: the same
    assert suppressed(ufleet) == {"reader@example.org": "unsubscribe"}
    stream = all_events(ufleet.redis)
    unsubscribed = [e for e in stream if e["type"] == "message.unsubscribed"]
    assert len({e["id"] for e in unsubscribed}) == 1  # clicked twice: one event id
    data = unsubscribed[0]["data"]
    assert (data["job_id"], data["owner"], data["recipients"]) == (
        str(sent),
        OWNER,
        ["reader@example.org"],
    )

    # the next job to that person is not sent
    relay.handler.reset()
    later = ufleet.dispatcher.send(job("reader@example.org", unsubscribe=False))
    assert ufleet.wait_final([later], 30) == {str(later): "suppressed"}
    assert relay.handler.messages == []


def test_unsubscribe_needs_one_recipient_and_its_own_headers(ufleet: Fleet) -> None:
    with pytest.raises(InvalidJob, match="exactly one recipient"):
        ufleet.dispatcher.send(job("a@example.org", cc=["b@example.org"]))
    with pytest.raises(InvalidJob, match="List-Unsubscribe"):
        ufleet.dispatcher.send(job("a@example.org", headers={"List-Unsubscribe": "<x>"}))
