"""Shares of a py-spy profile: where the projection stage's CPU time goes, function by function.

    .venv/bin/pip install py-spy      # a tool for this machine, not a dependency of the hub
    .venv/bin/py-spy record -r 250 --format raw -o /tmp/hub.txt -- \\
        .venv/bin/python -m bench.projection_stage --runs 1 --only hub
    .venv/bin/python -m bench.spy_summary /tmp/hub.txt

py-spy samples the stack at a fixed rate without slowing the program, unlike cProfile, which
charges every Python call. Only samples inside the root function (`Projector.process` by default)
count; time spent waiting for PostgreSQL is not sampled (py-spy skips idle threads), so the shares
are of the Python process's CPU time.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

_FRAME = re.compile(r"(?P<name>.*) \((?P<path>.*):\d+\)$")
REPO = f"{Path(__file__).resolve().parent.parent}/"


def _function(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["path"].split("/site-packages/", 1)[-1].replace(REPO, "")
    return f"{match['name']} ({path})"


def shares(lines: Sequence[str], root: str) -> tuple[int, Counter[str], Counter[str]]:
    """(samples under root, inclusive samples per function, own samples per function)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        start = next((i for i, f in enumerate(frames) if f.startswith(f"{root} (")), None)
        if start is None or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        names = [_function(f) for f in frames[start:]]
        for name in set(names):
            inclusive[name] += samples
        own[names[-1]] += samples
    return total, inclusive, own


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--root", default="Projector.process", help="function whose time is 100%%")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    total, inclusive, own = shares(args.profile.read_text().splitlines(), args.root)
    if not total:
        raise SystemExit(f"no samples under {args.root}")
    print(f"{total:,} samples under {args.root}\n")
    print("| function | inclusive | own |\n|---|---:|---:|")
    for name, samples in inclusive.most_common(args.top):
        print(f"| `{name}` | {samples / total:.1%} | {own[name] / total:.1%} |")


if __name__ == "__main__":
    main()
