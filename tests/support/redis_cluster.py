"""A Redis Cluster of private redis-server nodes on loopback, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from tests.support.services import free_port, need, wait_for

SLOTS = 16384


@dataclass
class Node:
    """One redis-server of the cluster; ``role`` is "master" or "replica" as last read."""

    port: int
    bus_port: int
    dir: Path
    role: str = "master"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    client: redis.Redis | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        """Is its process still running?"""
        return self.proc is not None and self.proc.poll() is None

    def call(self, *words: Any) -> Any:
        """Send one command to this node alone."""
        if self.client is None:
            self.client = redis.Redis(
                port=self.port, decode_responses=True, socket_timeout=1, socket_connect_timeout=0.5
            )
        return self.client.execute_command(*words)  # type: ignore[no-untyped-call]

    def log_tail(self, lines: int = 15) -> str:
        """The end of its logs, for error messages."""
        text = ""
        for log in (self.dir / "stderr.log", self.dir / "redis.log"):
            if log.exists():
                text += log.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class RedisCluster:
    """Start ``masters`` masters with ``replicas`` replicas each; kill nodes; wait for failovers."""

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        *,
        node_timeout_ms: int = 1000,
        appendonly: bool = True,
        extra: dict[str, str] | None = None,
    ) -> None:
        need("redis-server binary", shutil.which("redis-server") is not None)
        need("redis-cli binary", shutil.which("redis-cli") is not None)
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.appendonly = appendonly
        self.extra = extra or {}  # e.g. {"hash-max-listpack-value": "128"}
        self.root: Path | None = None
        self.nodes: list[Node] = []
        self._killed: dict[int, tuple[float, list[int]]] = {}  # port: (when, slots it served)

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...`` naming every node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> RedisCluster:
        """Start the nodes, create the cluster, and wait until it is whole; clean up on failure."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        ports = _free_ports(2 * self.masters * (1 + self.replicas))
        for port, bus_port in zip(ports[::2], ports[1::2], strict=True):
            node = Node(port, bus_port, self.root / str(port))
            node.dir.mkdir()
            with (node.dir / "stderr.log").open("wb") as out:  # where config errors go
                node.proc = subprocess.Popen(self._args(node), stdout=out, stderr=out)
            self.nodes.append(node)
        for node in self.nodes:
            wait_for(lambda n=node: self._answers(n), 10, what=f"redis-server on {node.port}")
        create = subprocess.run(
            ["redis-cli", "--cluster", "create"]
            + [f"127.0.0.1:{n.port}" for n in self.nodes]
            + ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if create.returncode != 0:
            raise AssertionError(
                f"redis-cli --cluster create failed:\n{create.stdout}{create.stderr}"
            )
        wait_for(self._whole, 20, what="every node to see all slots served, each with its replicas")
        self._read_roles()

    def _args(self, node: Node) -> list[str]:
        args = [
            "redis-server",
            "--port", str(node.port),
            "--bind", "127.0.0.1",
            "--dir", str(node.dir),
            "--logfile", str(node.dir / "redis.log"),
            "--save", "",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(node.dir / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-port", str(node.bus_port),  # port + 10000 may be above 65535
            "--repl-diskless-sync-delay", "0",  # the default 5 s would delay every replica's sync
            # CLUSTER SLOTS lists a replica once its offset moves, i.e. at the master's first
            # ping (every 10 s by default)
            "--repl-ping-replica-period", "1",
        ]  # fmt: skip
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        for name, value in self.extra.items():
            args += [f"--{name}", value]
        return args

    def _answers(self, node: Node) -> bool:
        if not node.alive:
            raise AssertionError(f"redis-server on {node.port} exited:\n{node.log_tail()}")
        try:
            return bool(node.call("PING"))
        except redis.RedisError:
            return False

    def _whole(self) -> bool:
        """Every node: cluster_state ok, all slots served by a master with its replicas linked."""
        try:
            for node in self.nodes:
                if not self._answers(node) or not _state_ok(node):
                    return False
                if _coverage(node.call("CLUSTER", "SLOTS"), self.replicas) != SLOTS:
                    return False
                if "master_link_status:down" in node.call("INFO", "replication"):
                    return False
        except redis.RedisError:
            return False
        return True

    def _live(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def _read_roles(self) -> None:
        for line in self._live()[0].call("CLUSTER", "NODES").splitlines():
            words = line.split()
            port = int(words[1].split("@")[0].rsplit(":", 1)[1])
            for node in self.nodes:
                if node.port == port:
                    node.role = "replica" if "slave" in words[2].split(",") else "master"

    def slot_map(self) -> dict[int, int]:
        """Master port of every served slot, as a live node sees it."""
        return _owners(self._live()[0].call("CLUSTER", "SLOTS"))

    def master_for_slot(self, slot: int) -> int:
        """Port of the master serving ``slot``."""
        return self.slot_map()[slot]

    def kill(self, port: int) -> None:
        """SIGKILL one node (no shutdown, no AOF flush)."""
        node = self._node(port)
        served = [s for s, p in self.slot_map().items() if p == port]
        if node.alive and node.proc is not None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()
        self._killed[port] = (time.monotonic(), served)
        if node.client is not None:
            node.client.close()

    def wait_failover(self, old_port: int, timeout: float = 15.0) -> float:
        """Wait until a replica serves every slot of the killed master ``old_port``.

        Also waits for cluster_state ok on every surviving node, and returns the seconds since
        :meth:`kill` (or since this call, for a node killed some other way).
        """
        since, lost = self._killed.get(old_port, (time.monotonic(), list(range(SLOTS))))
        survivors = self._live()

        def taken_over() -> bool:
            try:
                for node in survivors:
                    if not _state_ok(node):
                        return False
                    owners = _owners(node.call("CLUSTER", "SLOTS"))
                    if any(owners.get(s) in (None, old_port) for s in lost):
                        return False
            except redis.RedisError:
                return False
            return True

        wait_for(taken_over, timeout, what=f"a replica to take over the slots of {old_port}")
        elapsed = time.monotonic() - since
        self._read_roles()
        return elapsed

    def _node(self, port: int) -> Node:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(f"no node on port {port}")

    def stop(self) -> None:
        """SIGKILL every node and remove their directories."""
        for node in self.nodes:
            if node.alive and node.proc is not None:
                node.proc.kill()
                node.proc.wait()
            if node.client is not None:
                with contextlib.suppress(redis.RedisError):
                    node.client.close()
        self.nodes = []
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _state_ok(node: Node) -> bool:
    return "cluster_state:ok" in node.call("CLUSTER", "INFO")


def _owners(slots: list[Any]) -> dict[int, int]:
    owners: dict[int, int] = {}
    for start, end, master, *_ in slots:
        owners.update(dict.fromkeys(range(start, end + 1), int(master[1])))
    return owners


def _coverage(slots: list[Any], replicas: int) -> int:
    """How many slots are served by a master with at least ``replicas`` replicas."""
    return sum(end - start + 1 for start, end, _, *rest in slots if len(rest) >= replicas)
