"""Each bounce format on its own samples (tests/data/bounces/<format>/): read by its decoder and
classified as the corpus expects. Adding a format: docs/adding-a-bounce-format.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.bounces.classify.formats import DECODERS
from worker.bounces.classify.parse import parse_bounce

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "bounces"

#: registered formats with no sample in the repository: none (a new format comes with its own)
WITHOUT_SAMPLES: set[str] = set()


def _cases() -> list[tuple[str, str]]:
    return [
        (folder.name, sample)
        for folder in sorted(p for p in SAMPLES.iterdir() if p.is_dir())
        for sample in sorted(json.loads((folder / "expected.json").read_text()))
    ]


@pytest.mark.parametrize(("decoder", "sample"), _cases())
def test_a_sample_is_read_by_its_formats_decoder(decoder: str, sample: str) -> None:
    folder = SAMPLES / decoder
    expected = json.loads((folder / "expected.json").read_text())[sample]
    report = parse_bounce((folder / sample).read_bytes())
    assert report.decoder == decoder
    got = [{"status": b.status, "reason": b.reason, "hard_bounce": b.hard} for b in report.bounces]
    assert got == expected


def test_every_registered_format_has_samples_or_is_known_to_lack_them() -> None:
    folders = {p.name for p in SAMPLES.iterdir() if p.is_dir()}
    assert folders <= set(DECODERS), folders - set(DECODERS)  # a folder names a real decoder
    assert set(DECODERS) - folders == WITHOUT_SAMPLES
