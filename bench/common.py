"""What the bench's parts share: private processes (Redis, relay, workers), the relay's control
port, /proc readings, and the ~2 KB test messages every design sends."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
SECRET = "bench-secret-key-0123456789abcdef"
DOMAIN = "mail.bench.test"
BOUNCE_DOMAIN = "bounces.bench.test"

#: ~1.7 KB of plain ASCII text: with maildispatch's headers the built message is ~2.2 KB
_LINE = "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\n"
BODY = "Hello,\n\n" + _LINE * 20 + "\n-- \nThe bench\n"


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


class Proc:
    """A child process of the bench with its output in a log file; stopped by its own pid."""

    def __init__(
        self, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.args = list(args)
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            self.args,
            env=dict(env) if env is not None else None,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,  # its own process group: we stop it and its children only
        )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group we started, then SIGKILL it if it lingers."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
            except ProcessLookupError:
                pass
        self._out.close()

    def tail(self, chars: int = 3000) -> str:
        """The end of the log, for error messages."""
        return self.log.read_text(errors="replace")[-chars:]


class RedisServer:
    """A private redis-server on a free port (never the machine's Redis), its AOF in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.proc = Proc(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                # as production should run it: every write in the append-only file, fsynced once
                # a second (a crash loses at most a second of accepted jobs)
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                # as the README recommends: a job's state hash (a realistic subject and metadata
                # run past 64 bytes) stays in the compact listpack encoding, half the memory
                "--hash-max-listpack-value",
                "256",
                "--dir",
                str(tmp),
                "--protected-mode",
                "no",
            ],
            tmp / f"redis-{self.port}.log",
        )
        wait_port(self.port)
        import redis

        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.ping()
                break
            except redis.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:port/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def used_memory(self) -> int:
        """INFO memory's used_memory, in bytes."""
        return int(self.client.info("memory")["used_memory"])

    def stop(self) -> None:
        """Stop the server."""
        self.client.close()
        self.proc.stop()


class Relay:
    """The bench relay (bench/relay.py) in its own process, and its control port."""

    def __init__(
        self, tmp: Path, delay: float = 0.0, impl: str = "fast", pipelining: bool = True
    ) -> None:
        self.port = free_port()
        self.control_port = free_port()
        self.delay = delay
        self.impl = impl
        self.pipelining = pipelining
        self.proc = Proc(
            [
                sys.executable,
                str(BENCH / "relay.py"),
                "--port",
                str(self.port),
                "--control-port",
                str(self.control_port),
                "--delay",
                str(delay),
                "--impl",
                impl,
                *([] if pipelining else ["--no-pipelining"]),
            ],
            tmp / f"relay-{self.port}.log",
        )
        wait_port(self.control_port)
        wait_port(self.port)
        self._sock = socket.create_connection(("127.0.0.1", self.control_port))
        self._file = self._sock.makefile("rwb")

    @property
    def url(self) -> str:
        """``smtp://127.0.0.1:port``."""
        return f"smtp://127.0.0.1:{self.port}"

    def command(self, line: str) -> dict[str, Any]:
        """Send one control command, return its JSON answer."""
        self._file.write(line.encode() + b"\n")
        self._file.flush()
        answer = self._file.readline()
        if not answer:
            raise RuntimeError(f"the relay closed its control port:\n{self.proc.tail()}")
        result: dict[str, Any] = json.loads(answer)
        return result

    def stats(self) -> dict[str, Any]:
        """Counts so far."""
        return self.command("STATS")

    def reset(self) -> None:
        """Forget the counts."""
        self.command("RESET")

    def wait(self, unique: int, timeout: float) -> dict[str, Any]:
        """Block until ``unique`` distinct messages arrived (or the timeout); the counts."""
        return self.command(f"WAIT {unique} {timeout}")

    def stop(self) -> None:
        """Stop the relay."""
        with contextlib.suppress(OSError, RuntimeError):
            self.command("QUIT")
        self._file.close()
        self._sock.close()
        self.proc.stop()


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct children of a process (forked by any of its threads)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return out
    for task in tasks:
        try:
            out.extend(int(p) for p in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def descendants(pid: int) -> list[int]:
    """Children, grandchildren... of a process (a supervisor's workers and their pools)."""
    out: list[int] = []
    todo = children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children(child))
    return out


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU time a process has used (``reaped``: plus its children that exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every descendant, those already exited and reaped included."""
    return cpu_seconds(pid, reaped=True) + sum(
        cpu_seconds(c, reaped=True) for c in descendants(pid)
    )


def tree_rss(pid: int) -> int:
    """Resident memory of a process and every descendant, summed."""
    return rss_bytes(pid) + sum(rss_bytes(c) for c in descendants(pid))


def loadavg() -> str:
    """The 1-minute load average (other users of the machine show up here)."""
    return Path("/proc/loadavg").read_text().split()[0]


def machine() -> str:
    """A one-line description of the machine the figures come from."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except FileNotFoundError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024 // 1024
    except FileNotFoundError:
        pass
    py = ".".join(map(str, sys.version_info[:3]))
    return f"{os.cpu_count()} cores {model}, {mem} GiB RAM, Python {py}"


def job(i: int, run: str = "r") -> dict[str, Any]:
    """The i-th bench job: one recipient, ~1.7 KB of text (a ~2.2 KB message once built). It
    names no channel, as services' calls do: its owner's preferred one (none set: msc)."""
    return {
        "owner": f"tenant-{i % 50}",
        "identity": "Bench Sender <sender@acme.example>",
        "to": [f"user{i}-{run}@example.org"],
        "subject": f"Your receipt number {i}",
        "text": BODY,
        "metadata": {"bench": run, "n": i},
    }


def sent_event(n: int, job_id: str, owner: str) -> dict[str, str]:
    """The ``n``-th realistic ``message.sent`` event of a run, as an entry of the event stream
    (``o``: owner, ``d``: the event's JSON; config/events.py)."""
    from config.events import EventType, encode, job_data

    to = f"user{n}@example.org"
    data = job_data(
        job_id,
        owner,
        "msc",
        [to],
        {"order_id": 100000 + n, "template": "shipped"},
        attempt=1,
        provider_id=f"{n:012X}",
        reply=f"250 2.0.0 Ok: queued as {n:012X}",
        from_address="orders@acme.example",
        from_replaced=False,
    )
    return {"o": owner, "d": encode(EventType.SENT, data, to)}
