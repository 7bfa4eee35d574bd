"""``bench/run.py --smoke``: the bench still runs end to end. Timing is never asserted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.support.services import REPO, need

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


def test_bench_smoke_completes_and_prints_the_figure_line() -> None:
    need("redis-server on PATH", shutil.which("redis-server") is not None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    out = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stderr[-4000:] + out.stdout[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith("figures: fast: ceiling="), out.stdout[-2000:]
    for row in ("ceiling (aiosmtplib", "naive (task per email)", "maildispatch + DKIM"):
        assert row in out.stdout
    assert "DUPLICATES" not in out.stdout
