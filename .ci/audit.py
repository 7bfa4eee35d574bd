"""CI's dependency audit: ``pip-audit`` over requirements.lock, read so that it cannot pass falsely.

pip-audit asks a vulnerability service (PyPI's JSON API by default, or OSV) about every pinned
release. Where that service cannot be reached it does not fail: PyPI answers 404 and each package
is *skipped* ("Dependency not found on PyPI"), and pip-audit still prints "No known
vulnerabilities found" and exits 0; OSV raises a connection error. This script tells the three
outcomes apart:

- a known vulnerability in a locked release: exit 1, with the advisories and the fixed versions;
- every package audited, none vulnerable: exit 0;
- the service could not be asked (all or some packages unaudited, or a connection error): a loud
  ``AUDIT NOT DONE`` message naming the packages, and exit 0 so that a machine without access to
  the service does not fail CI spuriously -- unless ``MAILDISPATCH_AUDIT_REQUIRED=true``, where
  it is a failure (set it on a CI that can reach the service).

Usage: ``python .ci/audit.py [requirements.lock] [-- extra pip-audit arguments]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

UNREACHABLE = (
    "ConnectionError",
    "NameResolutionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "timed out",
    "SSLError",
    "ProxyError",
)


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    lock = Path(argv[0] if argv else "requirements.lock")
    required = os.environ.get("MAILDISPATCH_AUDIT_REQUIRED", "").lower() in ("1", "true", "yes")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        args = [sys.executable, "-m", "pip_audit", "--disable-pip", "--require-hashes"]
        args += ["-r", str(lock), "--format", "json", "--output", str(report)]
        args += ["--progress-spinner", "off", *extra]
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
        data = json.loads(report.read_text()) if report.exists() else None
    if data is None:
        if any(word in proc.stderr for word in UNREACHABLE):
            last = (proc.stderr.strip().splitlines() or [""])[-1][:200]
            return not_done(f"the vulnerability service could not be reached ({last})", required)
        sys.stderr.write(proc.stdout + proc.stderr)
        print(f"audit: pip-audit failed (exit {proc.returncode})", file=sys.stderr)
        return proc.returncode or 1
    return judge(data, required)


def judge(data: dict, required: bool) -> int:
    """The exit status for pip-audit's JSON report (``--format json``)."""
    deps = data.get("dependencies", [])
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if "skip_reason" in d]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            aliases = ", ".join(vuln.get("aliases") or [])
            print(
                f"VULNERABLE {dep['name']}=={dep['version']}: {vuln['id']} ({aliases}) fixed in {fixed}"
            )
    if vulnerable:
        print(
            f"audit: {len(vulnerable)} locked package(s) have known vulnerabilities: raise the "
            "floor in pyproject.toml and run `make lock`",
            file=sys.stderr,
        )
        return 1
    if skipped:
        names = sorted(d["name"] for d in skipped)
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        return not_done(
            f"{len(skipped)} of {len(deps)} packages were not audited ({shown}); pip-audit "
            f"said e.g. {skipped[0]['skip_reason']!r}",
            required,
        )
    print(f"audit: {len(deps)} locked packages, no known vulnerabilities")
    return 0


def not_done(why: str, required: bool) -> int:
    """Say loudly that nothing was checked; fail only where the audit is required."""
    print(
        "audit: AUDIT NOT DONE -- pip-audit could not reach a vulnerability service from this "
        f"machine, so requirements.lock was NOT checked: {why}",
        file=sys.stderr,
    )
    if required:
        print("audit: MAILDISPATCH_AUDIT_REQUIRED is set: failing", file=sys.stderr)
        return 1
    print(
        "audit: continuing (set MAILDISPATCH_AUDIT_REQUIRED=true where the service is reachable)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
