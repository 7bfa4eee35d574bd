"""The Lua scripts are files beside their modules, installed with them, and name only real job
states (config/states.py)."""

from __future__ import annotations

import re
from pathlib import Path

from config.lua import lua_script
from config.states import FINAL, JobState

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(REPO.glob("*/**/lua/*.lua"))
#: a state written or compared: HSET ... 'state', 'x' / st == 'x' / st ~= 'x'
STATE = re.compile(r"'state',\s*'([a-z_]+)'|\bst\s*[~=]=\s*'([a-z_]+)'")


def test_every_state_a_script_names_is_a_job_state() -> None:
    assert len(SCRIPTS) >= 15, SCRIPTS
    named = {a or b for path in SCRIPTS for a, b in STATE.findall(path.read_text())}
    named.discard("owner")  # HSET k 'state', 'sending', 'vanished', '1', 'owner', ...: not a state
    assert named, "no state found: the pattern no longer matches the scripts"
    assert named <= set(JobState), named - set(JobState)


def test_the_claim_treats_exactly_the_final_states_as_done() -> None:
    claim = lua_script("worker.jobs", "claim")
    done = claim[: claim.index("return {'done'")]
    assert set(re.findall(r"st == '([a-z]+)'", done)) == {s.value for s in FINAL}


def test_scripts_load_by_package_and_name() -> None:
    assert lua_script("producers", "queued").lstrip().startswith("--")
    assert "RPOP" in lua_script("worker.consume.fetch", "take")
