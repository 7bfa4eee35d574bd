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
from tests.support.services import wait_for
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
    link = f'<a href="/messages/{new_job}">'
    assert new_job and f"new job {link}<code>{new_job}</code></a>" in after
    assert "Resend</button>" not in after and f"{link}Resent: see the new job</a>" in after
    with signed_in(site["url"], new_key(site["store"], "desk")) as desk:
        job_page = desk.get(f"/messages/{new_job}")
    assert job_page.status_code == 200 and new_job in job_page.text
    assert '<td id="job-state">queued</td>' in job_page.text


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


def history(store: Store, owner: str = OWNER) -> list[str]:
    """Four outcomes of ``owner`` in the message history; their job ids, oldest first."""
    from worker.history.record import write_rows

    now = datetime.now(UTC)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    outcomes = [
        ("sent", "250 2.0.0 Ok: queued as 4F1", "ann@example.org"),
        ("failed", "550 5.1.1 <bob@example.org>: no such user", "bob@example.org"),
        ("sent", "250 ok <script>", "carol@example.org"),
        ("cancelled", "", "dan@example.org"),
    ]
    rows = []
    for n, (job_id, (state, said, to)) in enumerate(zip(ids, outcomes, strict=True)):
        at = now - timedelta(minutes=10 - n)
        status = {"state": state, "subject": f"Order {n} <b>shipped</b>", "attempts": "1"}
        status |= {"reply": said} if state == "sent" else {"last_error": said} if said else {}
        rows.append(
            {
                "job_id": job_id,
                "owner": owner,
                "channel": "msc",
                "state": state,
                "recipients": [to],
                "job_metadata": {},
                "status": status | {"updated_at": repr(at.timestamp())},
                "finished_at": at,
                "updated_at": at,
            }
        )
    with store.engine.begin() as conn:
        write_rows(conn, rows)
    return ids


def test_the_sent_history_page_lists_filters_and_shows_one_job(site: dict[str, Any]) -> None:
    ids = history(site["store"])
    history(site["store"], owner="someone-else")
    with signed_in(site["url"], new_key(site["store"], "desk")) as client:
        page = client.get("/messages", params={"owner": OWNER})
        assert page.status_code == 200
        html = page.text
        assert html.count('<tr id="job-') == 4 and "someone-else" not in html
        assert html.index(ids[3]) < html.index(ids[0])  # newest first
        assert "<b>" not in html and "Order 2 &lt;b&gt;shipped&lt;/b&gt;" in html
        assert "250 ok &lt;script&gt;" in html and "no such user" in html
        assert 'aria-current="page">Sent<' in html  # the section it is in
        failed_only = client.get("/messages", params={"owner": OWNER, "state": "failed"}).text
        assert failed_only.count('<tr id="job-') == 1 and ids[1] in failed_only
        one = client.get("/messages", params={"owner": OWNER, "recipient": "CAROL@example.org"})
        assert one.text.count('<tr id="job-') == 1 and ids[2] in one.text
        # one job, from the history (Redis knows nothing of it)
        job = client.get(f"/messages/{ids[1]}")
        assert job.status_code == 200 and '<td id="job-state">failed</td>' in job.text
        assert "550 5.1.1" in job.text
        assert client.get(f"/messages/{uuid.uuid4()}").status_code == 404
    owned = new_key(site["store"], "theirs", "read", owner="someone-else")
    mine = httpx.get(f"{site['url']}/messages", params={"owner": OWNER}, headers=bearer(owned))
    assert mine.status_code == 200 and ids[0] not in mine.text  # its own owner's only
    assert mine.text.count('<tr id="job-') == 4
    other = httpx.get(f"{site['url']}/messages/{ids[0]}", headers=bearer(owned))
    assert other.status_code == 404
    assert httpx.get(f"{site['url']}/messages?owner={OWNER}").status_code == 303  # sign in


def test_the_request_log_names_the_pages_signed_in_caller(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with signed_in(site["url"], new_key(site["store"], "support-desk")) as client:
        capsys.readouterr()
        assert client.get("/failed-sends", params={"owner": OWNER}).status_code == 200
    logged = [line for line in capsys.readouterr().out.splitlines() if "http_request" in line]
    assert logged and "support-desk" in logged[-1] and "caller=None" not in logged[-1]


def test_the_page_reads_well_in_a_browser_wide_and_on_a_phone(site: dict[str, Any]) -> None:
    """Addresses break only when they must; on a phone, Resend spans the card."""
    from selenium.webdriver.common.by import By

    from tests.support.api import chromium

    failed(site["store"], 1)
    key = new_key(site["store"], "desk")
    with chromium() as browser:
        browser.get(f"{site['url']}/login?next=/failed-sends%3Fowner%3D{OWNER}")
        browser.find_element(By.NAME, "api_key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait_for(lambda: "/failed-sends" in browser.current_url, 20, what="the page")
        cell = browser.find_element(By.CSS_SELECTOR, "#failed-sends td.recipient")
        line = float(
            browser.execute_script(
                "return parseFloat(getComputedStyle(arguments[0]).lineHeight)", cell
            )
        )
        inner = browser.execute_script(
            "const r = document.createRange(); r.selectNodeContents(arguments[0]);"
            "return r.getClientRects().length",
            cell,
        )
        assert inner == 1, f"the address wraps on a wide screen ({inner} lines, line {line}px)"
        heads = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#failed-sends th")]
        assert "Kind" in heads and "Hard or soft" in heads
        browser.set_window_size(390, 844)
        browser.get(f"{site['url']}/failed-sends?owner={OWNER}")
        row = browser.find_element(By.CSS_SELECTOR, "#failed-sends tbody tr")
        button = row.find_element(By.CSS_SELECTOR, "td.action button")
        cell = row.find_element(By.CSS_SELECTOR, "td.action")
        assert button.size["width"] >= cell.size["width"] - 2, "Resend is not full width"
        assert abs(button.location["x"] - cell.location["x"]) <= 2, "Resend is indented"
