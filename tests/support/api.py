"""The HTTP API under test: a real uvicorn server (in a thread, or as ``maildispatch api``),
API keys in the real store, and Debian's headless chromium driven by selenium."""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.support.services import background, free_port, need, wait_for
from worker.store import Store
from worker.store.apikeys import create_key

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


@contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on ``port`` or a free loopback port (in a thread); yields
    its URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-under-test", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 20, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def api_args(port: int) -> list[str]:
    """``maildispatch api`` as the Procfile runs it."""
    return [sys.executable, "-m", "producers.cli", "api", "--port", str(port)]


@contextmanager
def api_process(env: Mapping[str, str], log: Path) -> Iterator[str]:
    """``maildispatch api`` as a subprocess; yields its URL once /healthz answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with background(api_args(port), env, log) as proc:

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, 0.2, "the API to answer /healthz")
        yield url


def new_key(store: Store, name: str, scopes: str = "send,read", owner: str | None = None) -> str:
    """An API key in the store (for ``owner`` only, given one)."""
    with store.session() as session:
        key, _ = create_key(session, name, frozenset(scopes.split(",")), owner)
    return key


def bearer(key: str) -> dict[str, str]:
    """The Authorization header of a key."""
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """Debian's chromium, headless, through chromedriver (selenium); skipped if missing."""
    binary = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    need("chromium and chromedriver", bool(binary and driver_path))
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="md-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary or ""
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.add_argument(f"--window-size={width},{height}")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        driver.set_page_load_timeout(30)
        try:
            yield driver
        finally:
            driver.quit()
