"""`liandong audit verify|head` and `liandong parties shred|erase` (docs/audit.md).

Exit codes: 0 done (chain intact); 1 the chain is broken, or nothing matched what was to be erased;
2 refused before starting (configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

from services.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

# The commands import the store's modules when they run: `liandong --help` stays quick.

_HASH = re.compile(r"[0-9a-fA-F]{64}")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="the archive's hash chain (全过程记录): verify, head")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    check = commands.add_parser("verify", help="recompute the chain; exit 1 naming the first broken link")
    check.add_argument(
        "--expect-head",
        metavar="HASH",
        help="a head hash noted earlier (the liandong_audit_chain_head_info metric): it must still be in "
        "the chain, which catches a truncated tail",
    )
    check.set_defaults(run=_cmd_verify)
    commands.add_parser("head", help="print the chain's last seq and hash").set_defaults(run=_cmd_head)

    parties = sub.add_parser("parties", help="parties' personal data (当事人信息): crypto-shredding")
    party_commands = parties.add_subparsers(dest="parties_command", required=True)
    shred = party_commands.add_parser(
        "shred", help="delete the keys of parties no event named for the retention period"
    )
    shred.add_argument(
        "--older-than-days",
        type=int,
        metavar="N",
        help="days since the latest event naming the party (default: LIANDONG_PII_RETENTION_DAYS)",
    )
    shred.set_defaults(run=_cmd_shred)
    erase = party_commands.add_parser("erase", help="erase one person now (delete their keys)")
    who = erase.add_mutually_exclusive_group(required=True)
    who.add_argument("party_ref", nargs="?", help="the party's reference, as the case detail shows it")
    who.add_argument("--id-number", metavar="ID", help="the person's ID number (身份证号)")
    erase.set_defaults(run=_cmd_erase)


def _cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    expect = args.expect_head
    if expect is not None and not _HASH.fullmatch(expect):
        print("参数错误 invalid option: --expect-head must be 64 hex digits", file=sys.stderr)
        return 2

    from projections.archive_store import verify
    from services.store import with_engine

    async def run(engine: AsyncEngine) -> int:
        verdict = await verify(engine, expect)
        if verdict.broken is not None:
            print(f"审计链断裂 chain broken at {verdict.broken.describe()}")
            print(f"  {verdict.records:,} records verified before it", file=sys.stderr)
            return 1
        head = verdict.head.hash if verdict.head else "none (empty chain)"
        print(f"审计链完整 chain intact: {verdict.records:,} records, head {head}")
        if verdict.anchored_at is not None:
            print(f"  the expected head is the hash of seq {verdict.anchored_at}")
        return 0

    return asyncio.run(with_engine(settings, run))


def _cmd_head(settings: Settings, args: argparse.Namespace) -> int:
    from projections.archive_store import read_head
    from services.store import with_engine

    async def run(engine: AsyncEngine) -> int:
        async with engine.connect() as conn:
            head = await read_head(conn)
        if head is None:
            print("审计链为空 empty chain: seq 0")
        else:
            print(f"审计链头 chain head: seq {head.seq} hash {head.hash}")
        return 0

    return asyncio.run(with_engine(settings, run))


def _cmd_shred(settings: Settings, args: argparse.Namespace) -> int:
    from projections import party_store
    from projections.archive_store import lock_head
    from services.store import with_engine
    from services.timesource import time_source

    days = settings.pii_retention_days if args.older_than_days is None else args.older_than_days
    if days < 0:
        print("参数错误 invalid option: --older-than-days must be 0 or more", file=sys.stderr)
        return 2
    now = time_source(settings.time_source)()
    before = now - timedelta(days=days)

    async def run(engine: AsyncEngine) -> int:
        async with engine.begin() as conn:
            # Behind the projector's batches, never in the middle of one (see projections/party_store.py).
            await lock_head(conn)
            keys = await party_store.unseen_keys(conn, before)
            shredded = await party_store.shred(conn, keys, now)
        print(
            f"已销毁 shredded {shredded:,} party key(s) not named by any event since "
            f"{before.date().isoformat()} ({days} days)"
        )
        return 0

    return asyncio.run(with_engine(settings, run))


def _cmd_erase(settings: Settings, args: argparse.Namespace) -> int:
    from projections import party_store, pii
    from projections.archive_store import lock_head
    from services.store import with_engine
    from services.timesource import time_source

    now = time_source(settings.time_source)()

    async def run(engine: AsyncEngine) -> int:
        async with engine.begin() as conn:
            await lock_head(conn)
            ref = args.party_ref
            if args.id_number is not None:
                master = await pii.stored_master_key(conn, settings.master_key)
                if master is None:
                    print("未找到 no party data is stored", file=sys.stderr)
                    return 1
                ref = master.party_ref("id:" + pii.normalise_id_number(args.id_number))
            keys = await party_store.keys_of(conn, ref)
            shredded = await party_store.shred(conn, keys, now)
        if not shredded:
            # The ID number is never echoed: it is the personal data being erased.
            print(f"未找到 no live key for party {ref}: nothing to erase", file=sys.stderr)
            return 1
        print(f"已擦除 erased party {ref}: {shredded} key(s) deleted, its data can no longer be read")
        return 0

    return asyncio.run(with_engine(settings, run))
