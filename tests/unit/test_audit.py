"""CI's dependency audit (.ci/audit.py) never turns "nothing was checked" into a pass silently,
and fails on a vulnerable locked release; the lock pins every package with hashes."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.support.services import REPO


def _audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_audit", REPO / ".ci" / "audit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


AUDIT = _audit()
OK = {"name": "idna", "version": "3.10", "vulns": []}
SKIPPED = {"name": "orjson", "skip_reason": "Dependency not found on PyPI and could not be audited"}
BAD = {
    "name": "requests",
    "version": "2.31.0",
    "vulns": [
        {"id": "GHSA-9hjg-9r4m-mvj7", "fix_versions": ["2.32.4"], "aliases": ["CVE-2024-47081"]}
    ],
}


def test_a_vulnerable_release_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert AUDIT.judge({"dependencies": [OK, BAD, SKIPPED]}, required=False) == 1
    assert "requests==2.31.0" in capsys.readouterr().out


def test_unaudited_packages_are_reported_not_passed_silently(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert AUDIT.judge({"dependencies": [OK, SKIPPED]}, required=False) == 0
    err = capsys.readouterr().err
    assert "AUDIT NOT DONE" in err and "orjson" in err
    assert AUDIT.judge({"dependencies": [OK, SKIPPED]}, required=True) == 1


def test_everything_audited_and_clean_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert AUDIT.judge({"dependencies": [OK]}, required=True) == 0
    assert "no known vulnerabilities" in capsys.readouterr().out


#: (the last release with a published advisory, the fixed one) that pyproject.toml's floors and
#: the lock must stay above (issue #14)
ADVISORIES = {
    "aiosmtpd": ("1.4.5", "1.4.6"),
    "orjson": ("3.9.14", "3.9.15"),
    "requests": ("2.32.3", "2.32.4"),
    "cryptography": ("42.0.3", "42.0.4"),
    "idna": ("3.6", "3.7"),
    "jinja2": ("3.1.5", "3.1.6"),
    "urllib3": ("2.4.0", "2.5.0"),
    "h11": ("0.15.0", "0.16.0"),
}


def test_floors_and_lock_exclude_releases_with_advisories() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        lines += [line for line in extra if not line.startswith("maildispatch")]
    direct = {(req := Requirement(line)).name.lower(): req for line in lines}
    text = (REPO / "requirements.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)(.*?)(?=^\S|\Z)", text, re.M | re.S)
    pinned = {name.lower(): Version(version) for name, version, _ in entries}
    assert len(entries) > 50 and all("--hash=sha256:" in rest for _, _, rest in entries)
    for name, (vulnerable, fixed) in ADVISORIES.items():
        assert name in direct, f"{name} has no floor of its own in pyproject.toml"
        assert not direct[name].specifier.contains(vulnerable), direct[name]
        assert pinned[name] >= Version(fixed), name


def test_make_installs_from_the_lock_and_ci_audits_it() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "LOCK := requirements.lock" in makefile
    assert "pip install -q --require-hashes -r $(LOCK)" in makefile
    assert "make lint typecheck audit" in (REPO / ".ci" / "run").read_text()
