"""How big each bench profile's runs are (``--smoke``, ``--quick``, the full one), and the time
box that cuts a stalled run."""

from __future__ import annotations

from typing import Any

SLOW = 0.020  # seconds the slow relay waits before every reply

#: sizes per profile: repetitions of each design; emails per throughput run (fast/slow relay),
#: naive and peer runs, drains, streams (4 producers), seconds of the paced run (200/s), the bulk
#: backlog, producer jobs, HTTP jobs, idle latency sends, scaling runs; the Redis Cluster
#: scale-out (bench/scaleout.py)
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "reps": 3,
        "n": 10_000,
        "n_slow": 3_000,
        "naive": 3_000,
        "naive_slow": 200,
        "peers": 1_000,
        "peers_slow": 100,
        "peer_relays": ("fast", "slow"),
        "drain": 10_000,
        "drain_slow": 3_000,
        "stream": 5_000,
        "stream_slow": 2_000,
        "paced_s": 8.0,
        "backlog": 100_000,
        "producer": 100_000,
        "http": 20_000,
        "per_request": 1000,
        "latency": 300,
        "scaling": (1_000, 10_000, 100_000),
        "rsa": True,
        "history": 50_000,
        "webhooks": 20_000,
        "hotstate": (20_000, 10.0),  # jobs, hot window (s)
        # jobs by send_many per run (half by send()), repetitions, worker processes on the cluster
        "scaleout": (10_000, 3, (1, 2, 4)),
    },
    "quick": {
        "reps": 2,
        "n": 2_000,
        "n_slow": 1_000,
        "naive": 600,
        "naive_slow": 40,
        "peers": 200,
        "peers_slow": 30,
        "peer_relays": ("fast",),  # a Django worker start per cell: the slow relay's in full only
        "drain": 2_000,
        "drain_slow": 1_000,
        "stream": 1_000,
        "stream_slow": 600,
        "paced_s": 4.0,
        "backlog": 20_000,
        "producer": 20_000,
        "http": 5_000,
        "per_request": 1000,
        "latency": 60,
        "scaling": (1_000, 5_000),
        "rsa": False,
        "history": 10_000,
        "webhooks": 5_000,
        "hotstate": (5_000, 5.0),
        "scaleout": (2_000, 2, (1, 2, 4)),
    },
    "smoke": {
        "reps": 1,
        "n": 200,
        "n_slow": 100,
        "naive": 60,
        "naive_slow": 10,
        "peers": 20,
        "peers_slow": 6,
        "peer_relays": ("fast",),
        "drain": 200,
        "drain_slow": 100,
        "stream": 200,
        "stream_slow": 100,
        "paced_s": 1.0,
        "backlog": 1_000,
        "producer": 1_000,
        "http": 400,
        "per_request": 100,
        "latency": 5,
        "scaling": (100, 300),
        "rsa": False,
        "history": 500,
        "webhooks": 300,
        "hotstate": (200, 1.0),
        "scaleout": (300, 1, (1,)),  # the cluster and 1 Redis, one worker process each
    },
}
#: the paced stream: emails per second from all producers together
PACED_RATE = 200.0
#: a time box never reached by a working fleet: emails per second below which a run is cut
FLOOR = {"fast": 300.0, "slow": 60.0}


def timebox(tag: str, count: int) -> float:
    """Seconds a run of ``count`` emails may take before it is cut (and reported so)."""
    return 20.0 + count / FLOOR[tag]
