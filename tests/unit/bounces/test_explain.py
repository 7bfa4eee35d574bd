"""``maildispatch bounces parse --explain``: which decoder read a report and which rule chose
each reason and status, for an operator looking at a classification that seems wrong; the plain
``--json`` output keeps the contract's keys only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.cli.bounces import parse_files

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "bounces"


def _rows(capsys: pytest.CaptureFixture[str], *args: object) -> list[dict[str, object]]:
    capsys.readouterr()
    assert parse_files(*args) == 0  # type: ignore[arg-type]
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_explain_names_the_decoder_and_the_deciding_rule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    postfix = str(SAMPLES / "Postfix" / "lhost-postfix-04.eml")
    verizon = str(SAMPLES / "Verizon" / "written-verizon-01.eml")
    first, second = _rows(capsys, [postfix, verizon], True, True)
    assert (first["decoder"], first["kind"]) == ("Postfix", "bounce")
    (bounce,) = first["bounces"]  # type: ignore[misc]
    assert bounce["reason"] == "userunknown" and bounce["why"] == "status 5.1.1 means userunknown"
    (other,) = second["bounces"]  # type: ignore[misc]
    assert second["decoder"] == "Verizon"
    assert "no status in the report: 5.0.911 stands for the reason" in other["why"]

    plain = _rows(capsys, [postfix], True)
    assert set(plain[0]) == {"file", "decoder", "bounces"}
    assert set(plain[0]["bounces"][0]) == {  # type: ignore[index]
        "recipient", "action", "status", "reply_code", "reason", "hard", "diagnostic", "decoder"
    }  # fmt: skip


def test_explain_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_files([str(SAMPLES / "Postfix" / "lhost-postfix-04.eml")], False, True) == 0
    text = capsys.readouterr().out
    assert "read by the Postfix decoder" in text and "why: status 5.1.1 means userunknown" in text
