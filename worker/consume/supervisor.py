"""The processes of ``maildispatch worker LINE``: the Procfile's delivery lines and its ``events``
line, one worker process per core.

A delivery worker process delivers on one event loop (worker/consume/stream.py), so it uses one core; a
line started once should use the machine, as Celery's own default concurrency does. This starts
``MAILDISPATCH_<CHANNEL>_PROCESSES`` (default: one per core) solo-pool Celery workers for the
channel's queue, each named ``<channel>-<supervisor pid>-<n>@<host>`` (unique on the host, so the
line can be started again beside itself), forwards SIGTERM / SIGINT / SIGQUIT to them (a warm
shutdown: each finishes the messages it holds), and starts again a child that died (``kill -9``,
out of memory) — its messages come back by themselves meanwhile (the claim lease). One child
runs the embedded retry scheduler; several schedulers are safe, one is enough per line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

from config.celery import QUEUE
from config.settings import get_settings

#: a child that exits within this many seconds of its start, with an error, is not restarted
#: (a configuration error would otherwise loop): the whole line stops with its exit code
EARLY_EXIT = 5.0
RESTART_DELAY = 1.0


#: lines other than the delivery channels that the supervisor runs: the webhook deliverer, whose
#: lane tasks wait on receivers (threads) and spend their CPU in HTTP (one process per core)
THREADED = {"events": 8}


def processes_for(channel: str, given: int | None = None) -> int:
    """How many worker processes a line starts: given, configured, or one per core."""
    settings = get_settings()
    configured = given or int(getattr(settings, f"{channel}_processes", 0) or 0)
    return max(1, configured or os.cpu_count() or 1)


def celery_command(queue: str, *options: str, pool: str = "solo") -> list[str]:
    """``celery -A worker.app worker`` on one queue with this interpreter, the way every
    maildispatch worker runs (no gossip, no mingle), then ``options``."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "-Q",
        queue,
        "-P",
        pool,
        "--without-gossip",
        "--without-mingle",
        *options,
    ]


def child_args(channel: str, name: str, extra: list[str]) -> list[str]:
    """The command line of one worker process of the line: a solo-pool delivery worker, or
    (``events``) a pool of threads."""
    given = [a for a in extra if a != "--"]
    if channel in THREADED:
        threads = ["-c", str(THREADED[channel])] if "-c" not in given else []
        return celery_command(QUEUE[channel], "-n", f"{name}@%h", *threads, *given, pool="threads")
    return celery_command(QUEUE[channel], "-n", f"{name}@%h", *given)


class Supervisor:
    """Keeps N worker processes of one channel running until told to stop."""

    def __init__(self, channel: str, count: int, extra: list[str]) -> None:
        self.channel = channel
        self.count = count
        self.extra = extra
        self.children: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.stopping = False

    def spawn(self, index: int) -> None:
        """Start child ``index``."""
        env = dict(os.environ)
        if index > 0:  # one scheduler per line is enough
            env["MAILDISPATCH_EMBEDDED_SCHEDULER"] = "false"
        name = f"{self.channel}-{os.getpid()}-{index}"
        proc = subprocess.Popen(
            child_args(self.channel, name, self.extra), env=env, preexec_fn=_die_with_parent
        )
        self.children[index] = (proc, time.monotonic())

    def forward(self, signum: int, _frame: FrameType | None = None) -> None:
        """Pass a stop signal on to every child."""
        self.stopping = True
        for proc, _ in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    def run(self) -> int:
        """Start the children, restart the ones that die, return when all have stopped."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self.forward)
        for index in range(self.count):
            self.spawn(index)
        code = 0
        while self.children:
            time.sleep(0.2)
            for index, (proc, started) in list(self.children.items()):
                status = proc.poll()
                if status is None:
                    continue
                del self.children[index]
                if self.stopping:
                    code = code or max(status, 0)
                    continue
                if status != 0 and time.monotonic() - started < EARLY_EXIT:
                    print(
                        f"maildispatch worker: {self.channel} process {index} exited with "
                        f"{status} at start; stopping",
                        file=sys.stderr,
                    )
                    self.forward(signal.SIGTERM)
                    code = status if status > 0 else 1
                    continue
                print(
                    f"maildispatch worker: {self.channel} process {index} exited with {status}; "
                    "starting it again",
                    file=sys.stderr,
                )
                time.sleep(RESTART_DELAY)
                self.spawn(index)
        return code


def _die_with_parent() -> None:
    """In the child: a warm shutdown when the supervisor dies (Linux), no orphaned workers."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
