"""Accuracy of the parser on the shared bounce corpus, measured with the corpus' own scorer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO / ".." / "shared" / "bounce-corpus"
TARGETS = {"status": 0.95, "reason": 0.90, "hard": 0.97, "parsed": 1.0}


def test_corpus_targets() -> None:
    folder = CORPUS / "dev"
    if not (folder / "expected.json").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"bounce corpus missing at {folder}")
        pytest.skip(f"bounce corpus not found at {folder}")
    cmd = f"{sys.executable} -m producers.cli bounces parse --json {{files}}"
    result = subprocess.run(
        [sys.executable, str(CORPUS / "score.py"), str(folder), "--batch", "--cmd", cmd],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("bounce-eval:"), result.stdout[-2000:]
    scores = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", last) if k in TARGETS}
    for name, target in TARGETS.items():
        assert scores[name] >= target, f"{name}={scores[name]} < {target}\n{result.stdout}"
