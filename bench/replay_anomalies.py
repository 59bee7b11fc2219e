"""Do a live hub and a replay of its own topics find the same open anomalies?

    .venv/bin/python -m bench.replay_anomalies            # ~3 min: a simulated year, then a replay

A check, not a timing: the contract is that the set of *open* anomalies does not depend on batching
or arrival order (docs/architecture.md), so `liandong projections rebuild anomalies` may swap a
replay in. `bench.analysis_api.load_year` plays a simulated year through a real hub (gateway, SDK,
spreadsheet import, worker, scanner, announcer, on PostgreSQL); `liandong rebuild` then replays the
hub's topics, its own `anomaly.*` and `alert.*` events included, into a new database. The two
`anomalies` tables are compared kind by kind, but for the sweep's flow anomalies, which a replay does
not derive. Exit code 1 when the open sets differ.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.analysis_api import load_year
from bench.hub_processes import bench_connection, say

# Flow anomalies come from the worker's periodic sweep, which a replay does not run (a shadow
# rebuild keeps them): only the projector's anomalies are compared.
OPEN = "SELECT kind, subject FROM anomalies WHERE resolved_at IS NULL AND category <> 'flow'"
RESOLVED = (
    "SELECT kind, count(*) AS n FROM anomalies WHERE resolved_at IS NOT NULL AND category <> 'flow' "
    "GROUP BY kind"
)


async def anomalies(dsn: str) -> tuple[set[tuple[str, str]], Counter[str]]:
    conn = await bench_connection(dsn)
    try:
        open_ = {(r["kind"], r["subject"]) for r in await conn.fetch(OPEN)}
        resolved = Counter({r["kind"]: int(r["n"]) for r in await conn.fetch(RESOLVED)})
    finally:
        await conn.close()
    return open_, resolved


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args(argv)
    args.no_vacuum = True
    tmp = Path(tempfile.mkdtemp(prefix="replay-anomalies-"))
    year = await load_year(args, tmp)
    hub = year.hub
    try:
        live_open, live_resolved = await anomalies(hub.dsn)
        server, _, _ = hub.dsn.rpartition("/")
        admin = await bench_connection(f"{server}/test")
        try:
            await admin.execute("DROP DATABASE IF EXISTS liandong_replay_anomalies")
            await admin.execute("CREATE DATABASE liandong_replay_anomalies")
        finally:
            await admin.close()
        replay_dsn = f"{server}/liandong_replay_anomalies"
        say("replaying the hub's topics into a new database (liandong rebuild)")
        env = {
            **os.environ,
            **hub.env(),
            "LIANDONG_DATABASE_URL": replay_dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            "LIANDONG_DATA_DIR": str(tmp / "replay"),
        }
        replay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "rebuild", env=env
        )
        if await replay.wait() != 0:
            raise RuntimeError(f"liandong rebuild exited with {replay.returncode}")
        replay_open, replay_resolved = await anomalies(replay_dsn)
    finally:
        await hub.stop()
    print("\n| kind | open: live / replay | resolved: live / replay |\n|---|---:|---:|")
    for kind in sorted({k for k, _ in live_open | replay_open} | set(live_resolved) | set(replay_resolved)):
        live_n = sum(1 for k, _ in live_open if k == kind)
        replay_n = sum(1 for k, _ in replay_open if k == kind)
        print(f"| `{kind}` | {live_n} / {replay_n} | {live_resolved[kind]} / {replay_resolved[kind]} |")
    differ = sorted(live_open ^ replay_open)
    print(f"\nOpen anomalies in one store only: {differ or 'none'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
