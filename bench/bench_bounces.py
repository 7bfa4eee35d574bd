"""Benchmark the bounce parser on one core against a naive email-package parser.

Usage: python bench/bench_bounces.py [--corpus DIR] [--quick]

The baseline is what a first attempt looks like: ``email.message_from_bytes`` with
``policy=default`` and a walk over the parts looking for message/delivery-status.
The last line reads ``bounce-bench: msgs/s=XXXX baseline=YYYY ratio=Z.Z``.
"""

from __future__ import annotations

import argparse
import email
import sys
import time
from email import policy
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from worker.bounces.classify.parse import parse_bounce  # noqa: E402


def baseline(raw: bytes) -> int:
    """Count the per-recipient groups of a message/delivery-status part, the naive way."""
    msg = email.message_from_bytes(raw, policy=policy.default)
    found = 0
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            for group in part.get_payload():
                if group.get("Final-Recipient"):
                    found += 1
    return found


def rate(func: object, messages: list[bytes], seconds: float) -> float:
    """Return messages per second for ``func`` over ``messages``, repeated for ``seconds``."""
    call = func  # keep a local name: attribute lookups would be measured too
    done = 0
    start = time.perf_counter()
    while True:
        for raw in messages:
            call(raw)  # type: ignore[operator]
        done += len(messages)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def main() -> int:
    """Run the benchmark and print the summary line."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--corpus", default=str(REPO / ".." / "shared" / "bounce-corpus" / "dev"))
    ap.add_argument("--quick", action="store_true", help="about one second per parser")
    args = ap.parse_args()
    folder = Path(args.corpus)
    messages = [p.read_bytes() for p in sorted(folder.glob("*.eml"))]
    if not messages:
        print(f"no *.eml files in {folder}", file=sys.stderr)
        return 2
    seconds = 1.0 if args.quick else 5.0
    for raw in messages:  # warm up caches, compiled regexes
        parse_bounce(raw)
    ours = rate(parse_bounce, messages, seconds)
    base = rate(baseline, messages, seconds)
    size = sum(len(m) for m in messages) / len(messages)
    print(f"corpus: {len(messages)} messages, {size / 1024:.1f} KiB on average")
    print(f"parse_bounce: {ours:,.0f} msgs/s")
    print(f"baseline (email.policy.default + walk): {base:,.0f} msgs/s")
    print(f"bounce-bench: msgs/s={ours:.0f} baseline={base:.0f} ratio={ours / base:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
