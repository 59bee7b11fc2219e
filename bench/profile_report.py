"""A profile as shares of the profiled time: which functions the projection stage's time goes to."""

from __future__ import annotations

import pstats
from collections.abc import Sequence
from pathlib import Path

from bench.clock_rows import table

REPO = f"{Path(__file__).resolve().parent.parent}/"


def cumulative_shares(stats: pstats.Stats, top: int) -> str:
    """The `top` functions by cumulative time, each as a share of all the time profiled.

    Coroutines count only while they run: time awaiting the database or the broker shows up in the
    event loop's `select` (epoll) and in the driver's callbacks, not in the awaiting function.
    cProfile also adds a fixed cost to every call, so call-heavy Python code looks more expensive
    than it is; a sampling profiler (py-spy) gives the truer split.
    """
    entries = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    ranked = sorted(entries.items(), key=lambda item: item[1][3], reverse=True)
    rows: list[Sequence[object]] = []
    for (path, line, name), (_cc, calls, own, cumulative, _callers) in ranked[:top]:
        rows.append(
            (
                f"`{_short(path)}:{line}({name})`",
                f"{calls:,}",
                f"{own:.3f}",
                f"{cumulative:.3f}",
                f"{min(cumulative / total, 1.0):.0%}" if total else "",
            )
        )
    headers = ["function", "calls", "own s", "cumulative s", "share of profiled time"]
    return f"profiled time: {total:.2f} s\n\n" + table(headers, rows) + "\n"


def _short(path: str) -> str:
    for marker in ("/site-packages/", REPO, "/lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail if marker != "/lib/python3." else "stdlib/" + tail.split("/", 1)[1]
    return path
