"""Command-line helper behind ``maildispatch bounces parse --json FILE...``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from .parse import parse_bounce

__all__ = ["parse_files_command"]


def parse_files_command(paths: list[str], as_json: bool) -> int:
    """Parse each file and print one line per file; return 1 if any file was unreadable."""
    status = 0
    out = sys.stdout
    for path in paths:
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            status = 1
            out.write(json.dumps({"file": path, "error": str(exc)}) + "\n")
            continue
        try:
            report = parse_bounce(raw)
        except Exception as exc:  # one bad file must not end the batch
            status = 1
            out.write(json.dumps({"file": path, "error": f"parser failed: {exc!r}"}) + "\n")
            continue
        if as_json:
            row = {"file": path, "bounces": [b.as_json() for b in report.bounces]}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            out.write(f"{path}: {report.kind}\n")
            for b in report.bounces:
                out.write(
                    f"  {b.recipient} {b.action or '-'} {b.status or '-'} {b.reply_code or '-'} "
                    f"{b.reason} {'hard' if b.hard else 'soft'}\n"
                )
    out.flush()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m worker.bounces.classify.cli [--json] FILE...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    paths = [a for a in args if a != "--json"]
    return parse_files_command(paths, as_json)


if __name__ == "__main__":
    raise SystemExit(main())
