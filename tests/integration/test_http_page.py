"""The Failed Sends page over a real server: sign-in, escaping, CSRF, scopes, paging.

(The click on Resend in a real browser is in tests/e2e/test_http_walkthrough.py.)
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from config.settings import Settings
from tests.support.api import bearer, new_key, serve
from tests.support.env import SECRET
from tests.support.queue import depth
from worker.api.app import create_app
from worker.store import Store, open_store, repo

OWNER = "page-owner"


@pytest.fixture
def site(redis_client: redis.Redis, redis_url: str, tmp_path: Any) -> Iterator[dict[str, Any]]:
    settings = Settings(
        broker_url=redis_url,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        secret_key=SECRET,
        _env_file=None,  # type: ignore[call-arg]
    )
    store = open_store(settings.database_url)
    with serve(create_app(settings)) as url:
        yield {"url": url, "store": store, "redis": redis_client}
    store.dispose()


def failed(store: Store, count: int, subject: str = "Invoice", owner: str = OWNER) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "job_id": str(uuid.uuid4()),
            "owner": owner,
            "channel": "msc",
            "recipient": f"gone{i}@example.org",
            "kind": "rejected" if i % 2 else "expired",
            "reply_code": 550 if i % 2 else 451,
            "enhanced_status": "5.1.1" if i % 2 else "4.3.0",
            "reason": "userunknown" if i % 2 else "expired",
            "hard": bool(i % 2),
            "diagnostic": "550 5.1.1 User unknown",
            "subject": f"{subject} {i}",
            "identity": "Ann <ann@acme.example>",
            "created_at": now - timedelta(minutes=count - i),
            "job_metadata": {},
            "job": {
                "id": str(uuid.uuid4()),
                "owner": owner,
                "channel": "msc",
                "identity": {"address": "ann@acme.example"},
                "to": [{"address": f"gone{i}@example.org"}],
                "subject": f"{subject} {i}",
                "text": "Hello",
            },
        }
        for i in range(count)
    ]
    with store.session() as session:
        repo.record_failed_sends(session, rows)


@contextmanager
def signed_in(url: str, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=20) as client:
        res = client.post("/login", data={"api_key": key, "next": f"/failed-sends?owner={OWNER}"})
        assert res.status_code == 303, res.text
        yield client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def test_the_page_asks_for_a_key_first_and_signs_in_with_a_cookie(site: dict[str, Any]) -> None:
    key = new_key(site["store"], "support-desk")
    anonymous = httpx.get(f"{site['url']}/failed-sends?owner={OWNER}")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login?next=%2Ffailed-sends%3Fowner%3Dpage-owner"
    login = httpx.post(
        f"{site['url']}/login",
        data={"api_key": key, "next": f"/failed-sends?owner={OWNER}"},
    )
    assert login.status_code == 303 and login.headers["location"] == f"/failed-sends?owner={OWNER}"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and key.lower() not in cookie
    wrong = httpx.post(f"{site['url']}/login", data={"api_key": "md_nope", "next": "/"})
    assert wrong.status_code == 401 and "unknown, revoked" in wrong.text
    sender = new_key(site["store"], "sender", "send")
    assert httpx.post(f"{site['url']}/login", data={"api_key": sender}).status_code == 401
    evil = httpx.post(f"{site['url']}/login", data={"api_key": key, "next": "//evil.example/x"})
    assert evil.headers["location"] == "/failed-sends"  # never an open redirect
    forged = httpx.get(
        f"{site['url']}/failed-sends?owner={OWNER}",
        cookies={"md_session": "1.9999999999.forged"},
    )
    assert forged.status_code == 303


def test_the_page_lists_failures_in_plain_words_and_escapes_everything(
    site: dict[str, Any],
) -> None:
    failed(site["store"], 2, subject='<script>alert("x")</script>')
    failed(site["store"], 1, owner="someone-else")
    with signed_in(site["url"], new_key(site["store"], "desk")) as client:
        html = client.get("/failed-sends", params={"owner": OWNER}).text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "<script" not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; 1" in html
    assert html.index("gone1@example.org") < html.index("gone0@example.org")  # newest first
    assert "Mailbox does not exist (5.1.1)" in html and "Hard" in html
    assert "Gave up after repeated temporary failures (4.3.0)" in html and "Soft" in html
    assert "someone-else" not in html and html.count("Resend</button>") == 2
    with signed_in(site["url"], new_key(site["store"], "desk")) as client:
        one = client.get("/failed-sends", params={"owner": OWNER, "recipient": "Gone0@example.org"})
    assert "gone0@example.org" in one.text and "gone1@example.org" not in one.text
    assert 'name="recipient" type="search" value="Gone0@example.org"' in one.text


def test_a_key_for_one_owner_shows_that_owner_only(site: dict[str, Any]) -> None:
    failed(site["store"], 2)
    failed(site["store"], 1, subject="Theirs", owner="someone-else")
    with site["store"].session() as session:
        (theirs,) = repo.list_failed_sends(session, "someone-else").items
    with signed_in(site["url"], new_key(site["store"], "user", owner=OWNER)) as user:
        asked = user.get("/failed-sends", params={"owner": "someone-else"}).text  # ignored
        own = user.get("/failed-sends").text
        peek = user.post(
            f"/failed-sends/{theirs.id}/resend", data={"csrf": csrf_of(own), "owner": OWNER}
        )
    for html in (asked, own):
        assert "Theirs" not in html and html.count("Resend</button>") == 2
        assert 'name="owner" value' not in html.split("</form>")[0]  # no owner field to change
    assert peek.status_code == 404 and depth(site["redis"], "mail.msc") == 0


def test_a_suppressed_recipient_can_be_allowed_again_from_the_page(site: dict[str, Any]) -> None:
    failed(site["store"], 2)  # gone0@ and gone1@
    with site["store"].session() as session:
        repo.suppress(session, OWNER, ["Gone1@example.org"], "userunknown")
        repo.suppress(session, "*", ["gone0@example.org"], "operator")  # not the owner's to lift
    with signed_in(site["url"], new_key(site["store"], "reader", "read")) as reader:
        page = reader.get("/failed-sends", params={"owner": OWNER}).text
        assert page.count(">Suppressed<") == 1 and "Allow again" not in page
    failed(site["store"], 1, owner="someone-else")  # so that the stranger's page has a form
    with signed_in(site["url"], new_key(site["store"], "other", owner="someone-else")) as stranger:
        token = csrf_of(stranger.get("/failed-sends").text)
        form = {"csrf": token, "owner": OWNER, "address": "gone1@example.org"}
        assert stranger.post("/failed-sends/unsuppress", data=form).status_code == 404
    with signed_in(site["url"], new_key(site["store"], "desk")) as desk:
        page = desk.get("/failed-sends", params={"owner": OWNER}).text
        assert page.count("Allow again</button>") == 1
        assert 'aria-label="Allow sending to gone1@example.org again"' in page
        form = {"csrf": csrf_of(page), "owner": OWNER, "address": "gone1@example.org"}
        forged = desk.post("/failed-sends/unsuppress", data=form | {"csrf": "x"})
        assert forged.status_code == 403
        res = desk.post("/failed-sends/unsuppress", data=form)
        assert res.status_code == 303
        after = desk.get(res.headers["location"]).text
        assert "gone1@example.org can be sent to again." in after
        assert ">Suppressed<" not in after and "Allow again" not in after
        assert desk.post("/failed-sends/unsuppress", data=form).status_code == 404  # gone
        operator = form | {"owner": "*", "address": "gone0@example.org"}
        assert desk.post("/failed-sends/unsuppress", data=operator).status_code == 403
        spoof = desk.get("/failed-sends", params={"owner": OWNER, "allowed": "Pay now at evil"})
        assert "can be sent to again" not in spoof.text
    with site["store"].session() as session:
        assert repo.suppressed(session, OWNER, ["gone1@example.org", "gone0@example.org"]) == {
            "gone0@example.org": "operator"
        }


def test_resend_needs_the_session_csrf_token_and_the_send_scope(site: dict[str, Any]) -> None:
    failed(site["store"], 1)
    with site["store"].session() as session:
        (row,) = repo.list_failed_sends(session, OWNER).items
    with signed_in(site["url"], new_key(site["store"], "reader", "read")) as reader:
        page = reader.get("/failed-sends", params={"owner": OWNER}).text
        assert "Resend</button>" not in page
        res = reader.post(f"/failed-sends/{row.id}/resend", data={"csrf": "", "owner": OWNER})
        assert res.status_code == 403
    with signed_in(site["url"], new_key(site["store"], "desk")) as desk:
        page = desk.get("/failed-sends", params={"owner": OWNER}).text
        forged = desk.post(f"/failed-sends/{row.id}/resend", data={"csrf": "x", "owner": OWNER})
        assert forged.status_code == 403 and depth(site["redis"], "mail.msc") == 0
        res = desk.post(
            f"/failed-sends/{row.id}/resend", data={"csrf": csrf_of(page), "owner": OWNER}
        )
        assert res.status_code == 303
        assert res.headers["location"] == f"/failed-sends?owner={OWNER}&resent={row.id}"
        after = desk.get(res.headers["location"]).text
    assert depth(site["redis"], "mail.msc") == 1
    with site["store"].session() as session:
        new_job = repo.get_failed_send(session, row.id).resend_job_id  # type: ignore[union-attr]
    assert new_job and f"new job <code>{new_job}</code>" in after
    assert "Resend</button>" not in after and ">Resent<" in after


def test_a_bearer_key_works_on_the_page_and_older_pages_follow_a_cursor(
    site: dict[str, Any],
) -> None:
    failed(site["store"], 55)
    key = new_key(site["store"], "portal")
    first = httpx.get(
        f"{site['url']}/failed-sends", params={"owner": OWNER}, headers=bearer(key)
    ).text
    assert first.count('<tr id="failed-') == 50
    older = re.search(r'href="(/failed-sends\?owner=page-owner&amp;cursor=\d+)"', first)
    assert older, "no link to older failed sends"
    second = httpx.get(site["url"] + older.group(1).replace("&amp;", "&"), headers=bearer(key)).text
    assert second.count('<tr id="failed-') == 5 and "Older failed sends" not in second
