"""The ``maildispatch`` command as a user runs it: send, send-batch, status, failed list, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_msc_delivery import wait_final
from tests.support.fleet import Fleet
from tests.support.queue import depth
from tests.support.relay import Relay
from tests.support.services import REPO

GOOD = {
    "owner": "cli-owner",
    "identity": "Cli Sender <cli@acme.example>",
    "to": ["someone@example.org"],
    "subject": "From the CLI",
    "text": "Hello",
}


def run(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
    )


def malformed_jobs() -> list[tuple[str, dict[str, object]]]:
    """Fifty distinct ways a job can be bad: injection, bad addresses, oversize, missing parts."""
    bad: list[tuple[str, dict[str, object]]] = []
    for i in range(10):
        bad.append(("subject", GOOD | {"subject": f"Hi{i}\r\nBcc: victim{i}@example.com"}))
        bad.append(("to.0", GOOD | {"to": [f"user{i}@@example.org"]}))
        bad.append(("headers", GOOD | {"headers": {f"X-H{i}": f"v\nInjected: {i}"}}))
        bad.append(
            (
                "text",
                GOOD | {"text": "x" * (11 * 1024 * 1024)}
                if i == 0
                else GOOD | {"text": None, "html": None},
            )
        )
        bad.append(
            (
                "identity",
                GOOD | {"identity": f"Evil\r\nX: {i} <e@example.com>"}
                if i % 2
                else GOOD | {"identity": "no-at-sign"},
            )
        )
    return bad


def test_send_batch_refuses_every_malformed_line_and_enqueues_nothing(
    fleet: Fleet, tmp_path: Path
) -> None:
    lines = [json.dumps(GOOD)] + [json.dumps(j) for _, j in malformed_jobs()] + ["{not json"]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = run(fleet.env, "send-batch", str(path))
    assert out.returncode == 2
    reported = {
        int(line.split(":")[0].removeprefix("line "))
        for line in out.stderr.splitlines()
        if line.startswith("line ")
    }
    assert reported == set(range(2, len(lines) + 1))  # every bad line by number; line 1 is fine
    for number, (field, _) in enumerate(malformed_jobs(), start=2):
        assert any(
            line.startswith(f"line {number}: {field}") for line in out.stderr.splitlines()
        ), (number, field)
    assert depth(fleet.redis, "mail.msc") == 0 and fleet.redis.keys("md:*:job:*") == []


def test_send_batch_with_skip_invalid_delivers_the_valid_lines(
    fleet: Fleet, relay: Relay, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.jsonl"
    good = [GOOD | {"to": [f"p{i}@example.org"]} for i in range(5)]
    path.write_text("\n".join([json.dumps(j) for j in good] + ['{"owner": "x"}']) + "\n")
    out = run(fleet.env, "send-batch", str(path), "--skip-invalid", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["enqueued"] == 5 and result["invalid"] == 1
    from producers.client import Dispatcher

    d = Dispatcher(fleet.settings)
    wait_final(d, result["ids"])
    d.close()
    assert sorted(r for m in relay.handler.messages for r in m.rcpt_tos) == sorted(
        f"p{i}@example.org" for i in range(5)
    )


def test_send_and_status(fleet: Fleet, relay: Relay) -> None:
    out = run(
        fleet.env,
        "send",
        "--owner",
        "cli-owner",
        "--from",
        "Cli <cli@acme.example>",
        "--to",
        "one@example.org",
        "--to",
        "two@example.org",
        "--subject",
        "Hi",
        "--text",
        "Body",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["id"]
    from producers.client import Dispatcher

    d = Dispatcher(fleet.settings)
    wait_final(d, [job_id])
    d.close()
    status = json.loads(run(fleet.env, "status", job_id, "--json").stdout)
    assert status["state"] == "sent" and status["channel"] == "msc" and status["attempts"] == "1"
    assert status["from_address"] == "cli@acme.example"
    assert status["reply"].startswith("250")


def test_send_refuses_header_injection(fleet: Fleet) -> None:
    out = run(
        fleet.env,
        "send",
        "--owner",
        "o",
        "--from",
        "a@example.com",
        "--to",
        "b@example.org",
        "--subject",
        "Hi\r\nBcc: c@example.org",
        "--text",
        "x",
    )
    assert out.returncode == 2 and "subject" in out.stderr and "CR, LF" in out.stderr
    assert depth(fleet.redis, "mail.msc") == 0


def test_bad_arguments_get_an_error_line_not_a_traceback(fleet: Fleet, tmp_path: Path) -> None:
    send = ["send", "--owner", "o", "--from", "a@example.com", "--to", "b@example.org"]
    env = fleet.env | {"MAILDISPATCH_MAX_MESSAGE_BYTES": "4096"}
    cases = [
        (["--subject", "s", "--text", "x", "--header", "NoColon"], "--header must be", 2),
        (["--subject", "s", "--text", "x" * 5000], "text: message larger than 4096 bytes", 2),
    ]
    for extra, message, code in cases:
        out = run(env, *send, *extra)
        assert (out.returncode, message in out.stderr) == (code, True), out.stderr
        assert "Traceback" not in out.stderr
    missing = run(fleet.env, "send-batch", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 66 and "no such file" in missing.stderr
    kind = run(fleet.env, "failed", "list", "--kind", "nope")
    assert kind.returncode == 2 and "--kind must be one of" in kind.stderr
    for out in (missing, kind):
        assert "Traceback" not in out.stderr
    assert depth(fleet.redis, "mail.msc") == 0


def test_processes_refuse_to_start_without_a_secret_key(fleet: Fleet) -> None:
    env = {k: v for k, v in fleet.env.items() if k != "MAILDISPATCH_SECRET_KEY"}
    out = run(
        env,
        "send",
        "--owner",
        "o",
        "--from",
        "a@example.com",
        "--to",
        "b@example.org",
        "--text",
        "x",
    )
    assert out.returncode == 78 and "MAILDISPATCH_SECRET_KEY is not set" in out.stderr
    worker = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.app",
            "worker",
            "-Q",
            "mail.msc",
            "-P",
            "solo",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        worker.returncode != 0
        and "MAILDISPATCH_SECRET_KEY is not set" in worker.stderr + worker.stdout
    )


def processes_in(folder: Path) -> list[str]:
    """Command lines of the processes whose working directory is ``folder``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cwd").resolve() == folder.resolve():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def test_demo_runs_and_leaves_no_process(tmp_path: Path) -> None:
    from tests.support.services import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    # nothing answers there: the demo starts (and stops) a private redis-server
    env["MAILDISPATCH_BROKER_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    workdir = tmp_path / "work"
    workdir.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "producers.cli", "demo"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "retried, then delivered" in out.stdout and "5.1.1" in out.stdout
    assert out.stdout.count("delivered") >= 5
    assert (workdir / "var" / "demo.db").exists()
    assert processes_in(workdir) == []
