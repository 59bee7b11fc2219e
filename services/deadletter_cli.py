"""`liandong deadletter list|replay`: the dead-letter topic for operators (services/deadletters.py).

`list` shows where each dead letter came from and why, never its payload. `replay` re-drives them to
their original topics once the cause is fixed, each once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import datetime

from connectors.kafka.publisher import KafkaPublisher
from services.deadletters import (
    DEAD_LETTER_TOPIC,
    Listing,
    ReplayOutcome,
    list_dead_letters,
    parse_since,
    replay,
    summary_lines,
)
from services.settings import Settings

log = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_USAGE = 2


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("deadletter", help="dead letters (死信): list them, replay them after a fix")
    commands = parser.add_subparsers(dest="deadletter_command", required=True)
    listing = commands.add_parser("list", help="list dead letters: reason, origin, type, id (no payload)")
    _filters(listing)
    listing.add_argument("--detail", action="store_true", help="also show each letter's detail header")
    listing.add_argument("--pending", action="store_true", help="only those not replayed yet")
    listing.set_defaults(run=run_list)
    again = commands.add_parser(
        "replay", help="re-drive dead letters to their original topics, each once (after a fix)"
    )
    _filters(again)
    again.add_argument("--dry-run", action="store_true", help="say what would be replayed; change nothing")
    again.set_defaults(run=run_replay)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reason",
        action="append",
        metavar="REASON",
        help="only this reason (repeatable), e.g. unknown_schema, projection_failed",
    )
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="only letters dead-lettered from WHEN on: 2h, 30m, 7d, or an ISO time (China time if no offset)",
    )


def run_list(settings: Settings, args: argparse.Namespace) -> int:
    bootstrap, since = _prepare(settings, args)
    if bootstrap is None:
        return EXIT_USAGE
    try:
        listing = asyncio.run(list_dead_letters(bootstrap))
    except Exception as exc:  # unreachable, or an unexpected answer: say so, with the cause's kind
        return _unreachable(bootstrap, exc)
    print("\n".join(format_listing(listing, args.reason, since, args.pending, args.detail)))
    return 0


def format_listing(
    listing: Listing, reasons: list[str] | None, since: datetime | None, pending_only: bool, detail: bool
) -> list[str]:
    shown = [
        letter
        for letter in listing.letters
        if (reasons is None or letter.reason in reasons)
        and (since is None or letter.at >= since)
        and not (pending_only and listing.handled(letter))
    ]
    pending = sum(1 for letter in shown if not listing.handled(letter))
    lines = [
        f"死信 dead letters on {DEAD_LETTER_TOPIC}: {len(shown)} "
        f"(待重放 pending {pending}, 已处理 handled {len(shown) - pending})"
    ]
    if shown:
        lines.append(
            "位置 at | 时间 time (UTC+8) | 原因 reason | 来源 origin | 类型 ce_type | 事件 ce_id | "
            "重放 replays | 状态 state"
        )
    for letter in shown:
        origin = f"{letter.topic}[{letter.source_partition}]@{letter.source_offset}"
        state = "已处理 handled" if listing.handled(letter) else "待重放 pending"
        lines.append(
            f"{letter.partition}@{letter.offset} | {letter.at:%Y-%m-%d %H:%M:%S} | {letter.reason} | "
            f"{origin} | {letter.ce_type or '-'} | {letter.ce_id or '-'} | {letter.replays} | {state}"
        )
        if detail and letter.detail:
            lines.append(f"    {letter.detail}")
    return lines


def run_replay(settings: Settings, args: argparse.Namespace) -> int:
    bootstrap, since = _prepare(settings, args)
    if bootstrap is None:
        return EXIT_USAGE
    try:
        outcome = asyncio.run(_replay(settings, bootstrap, args.reason, since, args.dry_run))
    except Exception as exc:  # unreachable, or an unexpected answer: say so, with the cause's kind
        return _unreachable(bootstrap, exc)
    print("\n".join(summary_lines(outcome)))
    return 0


async def _replay(
    settings: Settings, bootstrap: str, reasons: list[str] | None, since: datetime | None, dry_run: bool
) -> ReplayOutcome:
    publisher = KafkaPublisher(
        bootstrap,
        client_id="liandong-deadletter-replay",
        partitions=settings.topic_partitions,
        replication=settings.topic_replication,
    )
    try:
        return await replay(bootstrap, publisher, reasons, since, dry_run)
    finally:
        await publisher.close()


def _prepare(settings: Settings, args: argparse.Namespace) -> tuple[str | None, datetime | None]:
    if settings.kafka_bootstrap is None:
        print("配置错误 configuration error: LIANDONG_KAFKA_BOOTSTRAP is required", file=sys.stderr)
        return None, None
    if args.since is None:
        return settings.kafka_bootstrap, None
    try:
        return settings.kafka_bootstrap, parse_since(args.since)
    except ValueError:
        print(
            f"参数错误 invalid option: --since {args.since!r} is neither 2h/30m/7d/45s nor an ISO time",
            file=sys.stderr,
        )
        return None, None


def _unreachable(bootstrap: str, exc: BaseException) -> int:
    log.error("dead-letter command failed: %r", exc)
    print(
        f"无法完成，请检查消息中间件 failed, is the broker at {bootstrap} reachable? ({type(exc).__name__})",
        file=sys.stderr,
    )
    return EXIT_FAILED
