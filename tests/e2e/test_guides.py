"""The two guides, followed on a copy of the tree: a toy channel, bounce format and provider.

docs/adding-a-channel.md and docs/adding-a-bounce-format.md each promise that a new channel or
format is one module plus one registration line. Here their code blocks are taken as written,
put into a copy of ``config/``, ``producers/`` and ``worker/``, and the result is run as a user
would: the toy channel's worker started by ``maildispatch worker``, a job sent to it with
``maildispatch send`` and delivered to a local HTTP server; the toy format's report read by the
parser. The copy must differ from the tree by exactly that module and that line.
"""

from __future__ import annotations

import filecmp
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import worker_env
from tests.support.redis_server import RedisServer
from tests.support.services import REPO, background, wait_for

PACKAGES = ("config", "producers", "worker")


def code_blocks(guide: str, language: str) -> list[str]:
    """The fenced code blocks of a guide in ``docs/``, in order."""
    text = (REPO / "docs" / guide).read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def copy_tree(dest: Path) -> Path:
    """The packages, as they are in the checkout, under ``dest``."""
    for name in PACKAGES:
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def changed(copy: Path) -> tuple[set[str], dict[str, list[str]]]:
    """(files added in the copy, lines added per changed file), relative to the checkout."""
    added: set[str] = set()
    lines: dict[str, list[str]] = {}

    def walk(cmp: filecmp.dircmp[str], rel: str) -> None:
        assert not cmp.left_only, f"removed in the copy: {cmp.left_only}"
        added.update(f"{rel}{name}" for name in cmp.right_only)
        for name in cmp.diff_files:
            old = (Path(cmp.left) / name).read_text().splitlines()
            new = (Path(cmp.right) / name).read_text().splitlines()
            lines[f"{rel}{name}"] = [line for line in new if line not in old]
            assert len(new) == len(old) + len(lines[f"{rel}{name}"]), f"{name}: lines changed"
        for sub, deeper in cmp.subdirs.items():
            walk(deeper, f"{rel}{sub}/")

    for name in PACKAGES:
        walk(filecmp.dircmp(REPO / name, copy / name, ignore=["__pycache__"]), f"{name}/")
    return added, lines


def insert_after(path: Path, anchor: str, line: str) -> None:
    """Add ``line`` after the first line of ``path`` that contains ``anchor``."""
    text = path.read_text().splitlines(keepends=True)
    at = next(i for i, old in enumerate(text) if anchor in old)
    text.insert(at + 1, line.rstrip("\n") + "\n")
    path.write_text("".join(text))


def run_in(copy: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` with the copy first on the import path."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=copy,
        env=env | {"PYTHONPATH": str(copy)},
        capture_output=True,
        text=True,
        timeout=60,
    )


class Provider:
    """An HTTP sending API on loopback: records each POST, answers 202 with an id."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                posts.append((dict(self.headers), body))
                answer = json.dumps({"id": f"prov-{len(posts)}"}).encode()
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider() -> Iterator[Provider]:
    server = Provider()
    yield server
    server.close()


def test_a_channel_is_one_module_and_one_line(tmp_path: Path, provider: Provider) -> None:
    module, table = code_blocks("adding-a-channel.md", "python")[:2]
    copy = copy_tree(tmp_path / "tree")
    # the guide's module, pointed at the local provider instead of the example's host
    assert "https://api.relay.example" in module
    (copy / "worker/channels/relayapi.py").write_text(
        module.replace("https://api.relay.example", provider.url)
    )
    (line,) = [x for x in table.splitlines() if '"relayapi"' in x]
    insert_after(copy / "config/channels.py", 'ChannelSpec("smtp"', line)

    added, lines = changed(copy)
    assert added == {"worker/channels/relayapi.py"}
    assert lines == {"config/channels.py": [line]}

    server = RedisServer(tmp_path / "redis").start()
    env = worker_env(server.url, f"sqlite:///{tmp_path / 'store.db'}", "smtp://127.0.0.1:9")
    env |= {"PYTHONPATH": str(copy)}
    try:
        worker = [sys.executable, "-m", "producers.cli", "worker", "relayapi", "--processes", "1"]
        log = tmp_path / "worker.log"
        with background(worker, env, log, cwd=copy):
            wait_for(lambda: "ready" in log.read_text(errors="replace"), 60, 0.1, "worker ready")
            sent = run_in(
                copy,
                env,
                "-m",
                "producers.cli",
                "send",
                "--owner",
                "acct-1",
                "--from",
                "Shop <news@shop.example>",
                "--to",
                "ann@example.org",
                "--to",
                "bob@example.org",
                "--subject",
                "Through the toy channel",
                "--text",
                "hello",
                "--channel",
                "relayapi",
                "--json",
            )
            assert sent.returncode == 0, sent.stderr
            job_id = json.loads(sent.stdout)["id"]

            def status() -> dict[str, Any]:
                out = run_in(copy, env, "-m", "producers.cli", "status", job_id, "--json")
                assert out.returncode == 0, out.stderr
                return dict(json.loads(out.stdout))

            wait_for(lambda: status()["state"] == "sent", 30, 0.2, "the job sent")
            assert status()["channel"] == "relayapi"
    finally:
        server.stop()
    ((headers, body),) = provider.posts  # once: one job, one POST
    assert headers["X-Recipients"] == "ann@example.org,bob@example.org"
    assert b"Subject: Through the toy channel" in body
    assert b"From: Shop <news@shop.example>" in body


TOY_REPORT = """\
From: Mail Delivery System <MAILER-DAEMON@mx.toy.example>
To: bounces@operator.example
Subject: Undelivered mail
X-Mailer: ToyMTA 1.0
Date: Sun, 06 Dec 2026 06:00:00 +0000
Message-ID: <toy-1@mx.toy.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Your message could not be delivered.

Delivery failed for <gone@toy.example>: 550 5.1.1 <gone@toy.example>: User unknown

------ Original message ------
From: Shop <news@shop.example>
To: gone@toy.example
Subject: Spring sale
Message-ID: <job-1@mail.operator.example>

hello
"""


def test_a_bounce_format_is_one_module_and_one_line(tmp_path: Path) -> None:
    blocks = code_blocks("adding-a-bounce-format.md", "python")
    module, imports = blocks[0], blocks[1]
    copy = copy_tree(tmp_path / "tree")
    formats = copy / "worker/bounces/classify/formats"
    (formats / "toymta.py").write_text(module)
    (line,) = [x for x in imports.splitlines() if x.strip() == "toymta,"]
    insert_after(formats / "__init__.py", "    sendmail,", line)

    added, lines = changed(copy)
    assert added == {"worker/bounces/classify/formats/toymta.py"}
    assert lines == {"worker/bounces/classify/formats/__init__.py": [line]}

    report = tmp_path / "toy.eml"
    report.write_text(TOY_REPORT)
    read = (
        "import json, sys\n"
        "from worker.bounces.classify.parse import parse_bounce\n"
        "r = parse_bounce(open(sys.argv[1], 'rb').read())\n"
        "print(json.dumps({'decoder': r.decoder, 'bounces': [b.as_json() for b in r.bounces]}))\n"
    )
    out = run_in(copy, {"PATH": "/usr/bin:/bin"}, "-c", read, str(report))
    assert out.returncode == 0, out.stderr
    parsed = json.loads(out.stdout)
    assert parsed["decoder"] == "ToyMTA"
    ((row,),) = [parsed["bounces"]]
    assert row["recipient"] == "gone@toy.example"
    assert (row["status"], row["reason"], row["hard"]) == ("5.1.1", "userunknown", True)
    # the same report in the checkout, without the module: not read as ToyMTA
    out = run_in(REPO, {"PATH": "/usr/bin:/bin"}, "-c", read, str(report))
    assert json.loads(out.stdout)["decoder"] != "ToyMTA"


TOY_DSN = """\
From: Mail Delivery Subsystem <MAILER-DAEMON@mta.operator.example>
To: bounces@operator.example
Subject: Delivery Status Notification (Failure)
Date: Sun, 06 Dec 2026 06:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mta.operator.example

Final-Recipient: rfc822; neko@toymail.example
Action: failed
Status: 5.0.0
Remote-MTA: dns; mx1.mx.toymail.example
Diagnostic-Code: smtp; 550 no such toymail user

--B--
"""


def test_a_provider_is_one_module_and_one_line(tmp_path: Path) -> None:
    module = code_blocks("adding-a-bounce-format.md", "python")[2]
    assert "@provider(" in module
    copy = copy_tree(tmp_path / "tree")
    providers = copy / "worker/bounces/classify/providers"
    (providers / "toymail.py").write_text(module)
    insert_after(providers / "__init__.py", "    tencent,", "    toymail,")

    added, lines = changed(copy)
    assert added == {"worker/bounces/classify/providers/toymail.py"}
    assert lines == {"worker/bounces/classify/providers/__init__.py": ["    toymail,"]}

    report = tmp_path / "toy.eml"
    report.write_text(TOY_DSN)
    parse = ("-m", "producers.cli", "bounces", "parse", "--json", str(report))
    out = run_in(copy, {"PATH": "/usr/bin:/bin"}, *parse)
    assert out.returncode == 0, out.stderr
    ((row,),) = [json.loads(out.stdout)["bounces"]]
    assert (row["recipient"], row["reason"], row["hard"]) == (
        "neko@toymail.example",
        "userunknown",
        True,
    )
    # without the module the generic rules cannot tell: the provider's words made the difference
    out = run_in(REPO, {"PATH": "/usr/bin:/bin"}, *parse)
    assert json.loads(out.stdout)["bounces"][0]["reason"] != "userunknown"
