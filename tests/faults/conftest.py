"""Fault tests: a private Redis, real worker and scheduler processes, a relay that misbehaves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import worker_env
from tests.support.faulty_relay import FaultyRelay
from tests.support.fleet import FAST_RECOVERY, ProcFleet
from tests.support.redis_server import RedisServer
from tests.support.services import free_port

MakeFleet = Callable[..., ProcFleet]


@pytest.fixture
def faulty_relay() -> Iterator[FaultyRelay]:
    """A relay of this test alone, on its own port."""
    relay = FaultyRelay(free_port()).up()
    yield relay
    relay.down()


@pytest.fixture
def make_fleet(tmp_path: Path, faulty_relay: FaultyRelay) -> Iterator[MakeFleet]:
    """Build a fleet on a private redis-server (``appendonly`` for broker restarts; job state
    always, the broker unless ``broker_url`` names another); no process is started until the test
    asks. Everything is stopped at the end, whatever happened."""
    made: list[tuple[ProcFleet, RedisServer]] = []

    def make(*, appendonly: bool = False, broker_url: str | None = None, **env: str) -> ProcFleet:
        server = RedisServer(tmp_path / "redis", appendonly=appendonly).start()
        settings = worker_env(
            server.url,
            f"sqlite:///{tmp_path / 'store.db'}",
            faulty_relay.url,
            **(FAST_RECOVERY | env),
        )
        fleet = ProcFleet(tmp_path, settings, redis_server=server, broker_url=broker_url)
        made.append((fleet, server))
        return fleet

    yield make
    for fleet, server in made:
        fleet.close()
        server.stop()
