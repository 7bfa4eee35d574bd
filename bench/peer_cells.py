"""The peers' cells of the bench: bench/peers.py (django-celery-email, django-post_office;
written alongside) called when it exists and Django is installed, one design per (peer, shape),
interleaved with ours by bench/run.py. Its ``run_peer``'s parameters are matched by name, so
either of its signatures works."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import scenarios as sc
from bench.common import RedisServer, Relay
from bench.scenarios import Result


def designs(
    relay: Relay,
    tag: str,
    count: int,
    redis: RedisServer,
    tmp: Path,
    add: Callable[[str, Result], None],
) -> list[tuple[str, Callable[[int], None]]]:
    """(title, run) of every peer cell, or none without bench/peers.py or Django; each run
    hands its row to ``add`` under ``peer-<design>-<shape>-<tag>``."""
    if importlib.util.find_spec("django") is None:
        return []
    try:
        from bench import peers
    except ImportError:
        return []
    found: list[tuple[str, Callable[[int], None]]] = []
    for design in getattr(peers, "DESIGNS", {}):
        for shape in getattr(peers, "SHAPES", ("single", "batch")):

            def run(rep: int, design: str = design, shape: str = shape) -> None:
                relay.reset()
                try:
                    row = run_peer(peers, design, shape, relay, redis, count, tmp)
                finally:
                    sc.clean(redis)
                add(f"peer-{design}-{shape}-{tag}", row)

            found.append((f"peer {design} ({shape})", run))
    return found


def run_peer(
    peers: Any, design: str, shape: str, relay: Relay, redis: RedisServer, count: int, tmp: Path
) -> Result:
    """One peer cell through bench/peers.py's ``run_peer``, as one of our rows."""
    given = {
        "design": design,
        "shape": shape,
        "relay": relay,
        "relay_host": "127.0.0.1",
        "relay_port": relay.port,
        "broker_url": f"redis://127.0.0.1:{redis.port}/3",
        "redis": redis,
        "count": count,
        "tmp": tmp,
        "wait": relay.wait,
    }
    wanted = inspect.signature(peers.run_peer).parameters
    out = peers.run_peer(**{k: v for k, v in given.items() if k in wanted})
    return Result(
        name=str(getattr(out, "name", f"{design} ({shape})")),
        count=out.count,
        delivered=out.delivered,
        seconds=out.seconds,
        duplicates=out.duplicates,
        cpu_us=dict(out.cpu_us),
        note=out.note,
    )
