"""Fault tests: a private Redis, real worker and scheduler processes, a relay that misbehaves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.faulty_relay import FaultyRelay
from tests.support.fleet import FAST_RECOVERY, Fleet
from tests.support.services import free_port

MakeFleet = Callable[..., Fleet]


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
    made: list[Fleet] = []

    def make(*, appendonly: bool = False, broker_url: str | None = None, **env: str) -> Fleet:
        fleet = Fleet(
            tmp_path,
            relay_url=faulty_relay.url,
            broker_url=broker_url,
            appendonly=appendonly,
            env=FAST_RECOVERY | env,
        )
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()
