"""The issue's check, as an operator does it: start the Procfile's ``api``, ``msc``, ``scheduler``
and ``flower`` processes, create an API key, post jobs over HTTP (with and without the key,
malformed, oversized), watch them delivered, read them in Flower without PII, read /metrics, and
open the Failed Sends page in headless Chromium, see the failed send and click Resend.

The processes get a private redis-server so that no other worker (such as the session's
``msc_fleet``) takes their jobs and records them in another store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import chromium
from tests.support.env import worker_env
from tests.support.relay import Relay
from tests.support.services import REPO, background, free_port, need, wait_for

pytestmark = pytest.mark.e2e

FLOWER_AUTH = ("ops", "walkthrough-flower-pw")
OWNER = "walkthrough-owner"
BODY_CAP = 200_000
FINAL = {"sent", "failed", "suppressed", "bounced"}


def procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    need("redis-server", binary is not None)
    port = free_port()
    args = [
        binary or "",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
    ]
    with background(args, os.environ, tmp_path / "redis.log"):
        url = f"redis://127.0.0.1:{port}/0"
        wait_for(
            lambda: "Ready to accept" in (tmp_path / "redis.log").read_text(), 20, what="redis"
        )
        yield url


@pytest.fixture
def stack(private_redis: str, relay: Relay, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The Procfile's processes, each started by its own line (``sh -c``), ports from settings."""
    env = worker_env(private_redis, f"sqlite:///{tmp_path / 'store.db'}", relay.url)
    env |= {
        "MAILDISPATCH_FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH),
        "MAILDISPATCH_API_MAX_BODY_BYTES": str(BODY_CAP),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    }
    lines = procfile()
    ports = {"api": free_port(), "flower": free_port()}
    with ExitStack() as stack:
        for name in ("api", "msc", "scheduler", "flower"):
            # honcho and foreman set $PORT per line; the lines listen where the README says
            setting = f"MAILDISPATCH_{name.upper()}_PORT"
            proc_env = env | {"PORT": "1"} | ({setting: str(ports[name])} if name in ports else {})
            stack.enter_context(
                background(["sh", "-c", "exec " + lines[name]], proc_env, tmp_path / f"{name}.log")
            )
        api = f"http://127.0.0.1:{ports['api']}"
        flower = f"http://127.0.0.1:{ports['flower']}"

        def answering(url: str, **kw: Any) -> bool:
            try:
                return httpx.get(url, timeout=2, **kw).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(lambda: answering(f"{api}/healthz"), 60, 0.3, "the api process")
        wait_for(lambda: answering(f"{flower}/api/workers", auth=FLOWER_AUTH), 60, 0.3, "flower")
        wait_for(
            lambda: "ready" in (tmp_path / "msc.log").read_text(errors="replace"), 60, what="msc"
        )
        yield {"env": env, "api": api, "flower": flower, "logs": tmp_path}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["maildispatch", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def job(to: str, **extra: Any) -> dict[str, Any]:
    return {
        "owner": OWNER,
        "identity": "Walk Through <walker@acme.example>",
        "to": [to],
        "subject": f"Quarterly <b>report</b> for {to}",
        "text": "walkthrough-body-marker",
    } | extra


def test_operator_walkthrough(stack: dict[str, Any], relay: Relay) -> None:
    env, api, flower = stack["env"], stack["api"], stack["flower"]

    # an API key for the calling service, printed once; a second one that may only read
    created = cli(env, "api-keys", "create", "--name", "billing", "--scope", "send,read")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    reader = cli(
        env, "api-keys", "create", "--name", "dashboards", "--scope", "read"
    ).stdout.strip()
    listing = cli(env, "api-keys", "list", "--json")
    assert {k["name"] for k in json.loads(listing.stdout)} == {"billing", "dashboards"}
    assert key not in listing.stdout
    h = {"Authorization": f"Bearer {key}"}
    # a key for one owner (e.g. handed to one user's integration), and an owner that cannot be
    portal = cli(env, "api-keys", "create", "--name", "portal", "--owner", OWNER, "--json")
    assert json.loads(portal.stdout.strip().splitlines()[-1])["owner"] == OWNER
    bad_owner = cli(env, "api-keys", "create", "--name", "x", "--owner", "a\nb")
    assert bad_owner.returncode == 2 and "--owner" in bad_owner.stderr

    # with and without the key, malformed and oversized
    http = httpx.Client(base_url=api, timeout=30)
    assert http.post("/v1/messages", json=job("a@example.org")).status_code == 401
    assert (
        http.post(
            "/v1/messages", json=job("a@example.org"), headers={"Authorization": f"Bearer {reader}"}
        ).status_code
        == 403
    )
    malformed = http.post("/v1/messages", json=job("not-an-address", subject="x\r\ny"), headers=h)
    assert malformed.status_code == 422
    assert {e["field"] for e in malformed.json()["errors"]} == {"to.0.address", "subject"}
    assert http.post("/v1/messages", content=b"{oops", headers=h).status_code == 422
    portal_h = {
        "Authorization": f"Bearer {json.loads(portal.stdout.strip().splitlines()[-1])['key']}"
    }
    other = http.post("/v1/messages", json=job("a@example.org", owner="x"), headers=portal_h)
    assert other.status_code == 403 and other.json()["errors"][0]["field"] == "owner"
    huge = http.post("/v1/messages", json=job("a@example.org", text="x" * BODY_CAP), headers=h)
    assert huge.status_code == 413

    # posted, and watched until delivered
    jobs = [job(f"reader{i}@example.org") for i in range(10)]
    jobs += [job("reject-walk@example.org"), job("defer1-walk@example.org")]
    batch = http.post("/v1/messages:batch", json={"jobs": jobs}, headers=h)
    assert batch.status_code == 202, batch.text
    ids = batch.json()["ids"]
    one = http.post(
        "/v1/messages", json=job("single@example.org"), headers=h | {"Idempotency-Key": "k1"}
    )
    ids.append(one.json()["id"])
    states: dict[str, str] = {}

    def delivered() -> bool:
        for i in ids:
            if states.get(i) not in FINAL:
                states[i] = http.get(f"/v1/messages/{i}", headers=h).json()["state"]
        return all(s in FINAL for s in states.values())

    wait_for(delivered, 90, 0.3, "the jobs to be delivered")
    assert sorted(states.values()) == ["failed"] + ["sent"] * 12
    assert len(relay.handler.messages) == 12

    # Flower: every delivery task by its readable name, and no address, subject or body
    def flower_tasks() -> dict[str, Any]:
        res = httpx.get(f"{flower}/api/tasks", auth=FLOWER_AUTH, timeout=10)
        return dict(res.json())

    wait_for(
        lambda: sum(t["state"] == "SUCCESS" for t in flower_tasks().values()) >= 3,
        60,
        0.5,
        "Flower to show the delivery tasks",
    )
    tasks = flower_tasks()
    assert {t["name"] for t in tasks.values()} == {"maildispatch.deliver.msc"}
    dump = json.dumps(tasks)
    for private in (
        "@example.org",
        "walker@acme.example",
        "Quarterly",
        "walkthrough-body-marker",
        key,
    ):
        assert private not in dump

    # metrics: queue depth (a gmail job waits: no gmail worker runs) and outcome counters
    http.post("/v1/messages", json=job("waiting@example.org", channel="gmail"), headers=h)
    metrics = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(http.get("/metrics").text)
        for s in family.samples
    }
    assert metrics["maildispatch_queue_messages", (("queue", "mail.gmail"),)] == 1
    assert metrics["maildispatch_queue_messages", (("queue", "mail.msc"),)] == 0
    assert metrics["maildispatch_deliveries_total", (("channel", "msc"), ("outcome", "sent"))] == 12
    assert (
        metrics["maildispatch_deliveries_total", (("channel", "msc"), ("outcome", "failed"))] == 1
    )
    assert metrics["maildispatch_delivery_latency_seconds_count", (("channel", "msc"),)] == 12

    # the Failed Sends page in headless Chromium: sign in, see the failure, click Resend
    with chromium() as browser:
        from selenium.webdriver.common.by import By

        browser.get(f"{api}/failed-sends?owner={OWNER}")
        assert "/login" in browser.current_url  # not signed in yet
        browser.find_element(By.NAME, "api_key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait_for(lambda: "/failed-sends" in browser.current_url, 20, what="the page")
        assert "<script" not in browser.page_source
        (row,) = browser.find_elements(By.CSS_SELECTOR, "#failed-sends tbody tr")
        text = row.text
        assert "reject-walk@example.org" in text
        assert "Quarterly <b>report</b> for reject-walk@example.org" in text  # escaped, not bold
        assert row.find_elements(By.TAG_NAME, "b") == []
        assert "Mailbox does not exist (5.1.1)" in text and "Hard" in text and "MSC" in text
        row_id = row.get_attribute("id")
        row.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(lambda: browser.find_elements(By.ID, "flash"), 20, what="the resend notice")
        flash = browser.find_element(By.ID, "flash").text
        assert "reject-walk@example.org" in flash
        new_id = browser.find_element(By.CSS_SELECTOR, "#flash code").text
        assert "Resent" in browser.find_element(By.ID, row_id).text  # no second Resend button

        # readable on a phone: no sideways scrolling, the Resend-less card still shows all fields
        browser.set_window_size(390, 844)
        browser.get(f"{api}/failed-sends?owner={OWNER}")
        fits = browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        )
        assert fits, "the page scrolls sideways on a phone-sized screen"

    # the click enqueued a new job, linked to the failed send
    resent = http.get(f"/v1/messages/{new_id}", headers=h)
    assert resent.status_code == 200 and resent.json()["owner"] == OWNER
    failed = http.get("/v1/failed-sends", params={"owner": OWNER}, headers=h).json()["items"]
    assert any(f["resend_job_id"] == new_id for f in failed)
    http.close()
