"""``bench/run.py --smoke``: the bench still runs end to end. Timing is never asserted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import REPO, need

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

#: rows every smoke run has, per relay: the two ceilings, naive, maildispatch fed by send_many
#: (DKIM off and on), by send() from four producer processes, and both drains (the msc line
#: started on a queue filled while it was stopped)
ROWS = ("ceiling", "ceilingN", "naive", "msc", "msc-dkim", "stream", "drain-single", "drain-batch")


def test_bench_smoke_completes_and_prints_the_figure_line(tmp_path: Path) -> None:
    need("redis-server on PATH", shutil.which("redis-server") is not None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    figures = tmp_path / "bench.json"
    out = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke", "--json", str(figures)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stderr[-4000:] + out.stdout[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith("figures: fast: ceiling="), out.stdout[-2000:]
    for name in ("single/batch fast=", "stream/batch fast=", "paced slow p50/p99=", "backlog p99="):
        assert name in lines[-1]
    for row in ("ceiling, 1 process", "naive (task per email)", "maildispatch + DKIM", "drain:"):
        assert row in out.stdout
    assert "DUPLICATES" not in out.stdout

    data = json.loads(figures.read_text())
    for tag in ("fast", "slow"):
        for row in ROWS:
            key = f"msc-{tag}-dkim" if row == "msc-dkim" else f"{row}-{tag}"
            assert key in data["rows"], sorted(data["rows"])
            assert data["rows"][key]["runs"], key
        assert data["figures"][f"paced-{tag}"][0]["sends"] > 0
        # every maildispatch job's final state was read back from Redis
        assert sum(data["rows"][f"msc-{tag}"]["runs"][0]["states"].values()) > 0
    assert data["figures"]["backlog"]["singles"] > 0
    assert "default" in data["figures"]["pipelining"]
    # Redis per delivered job measured after the (configured) hot window, not assumed
    hot = data["figures"]["hotstate"]
    assert hot["delivered"] == hot["count"] and "bytes_per_job_after" in hot
