"""`liandong archive export|check|restore`: backups of the hash-chained archive (docs/backup.md).

Exit codes: 0 done; 1 refused or failed (a broken chain, a bad file, a target that is not empty);
2 refused before starting (options, configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from services.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

# The commands import their modules when they run: `liandong --help` stays quick.

_HASH = re.compile(r"[0-9a-fA-F]{64}")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("archive", help="backups of the archive (全过程记录备份): export, check, restore")
    commands = parser.add_subparsers(dest="archive_command", required=True)
    export = commands.add_parser("export", help="write the archive to a backup file, checking its chain")
    export.add_argument("file", help="the backup file to write (gzip'd JSON lines), or - for standard output")
    _expect_head(export)
    export.add_argument(
        "--include-master-key",
        action="store_true",
        help="carry the master key in the file (needed when it lives in the database, not in "
        "LIANDONG_MASTER_KEY); the file then unlocks everyone's personal data: guard it like the key",
    )
    export.set_defaults(run=_cmd_export)
    check = commands.add_parser("check", help="check a backup file (format, every link, head, counts)")
    check.add_argument("file", help="the backup file")
    _expect_head(check)
    check.set_defaults(run=_cmd_check)
    restore = commands.add_parser(
        "restore",
        help="restore a backup file into an empty broker and database, and rebuild every projection",
    )
    restore.add_argument(
        "file", help="the backup file (read once to check, then to write: a path, not standard input)"
    )
    _expect_head(restore)
    restore.set_defaults(run=_cmd_restore)


def _expect_head(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expect-head",
        metavar="HASH",
        help="a head hash noted earlier (the liandong_audit_chain_head_info metric): it must be in the chain",
    )


def _bad_head(value: str | None) -> bool:
    if value is not None and not _HASH.fullmatch(value):
        print("参数错误 invalid option: --expect-head must be 64 hex digits", file=sys.stderr)
        return True
    return False


def _cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    if _bad_head(args.expect_head):
        return 2
    from services.archive_io import ExportRefused, export
    from services.store import with_engine

    target = None if args.file == "-" else Path(args.file)
    started = time.monotonic()

    async def run(engine: AsyncEngine) -> int:
        out: IO[bytes]
        if target is None:
            out = sys.stdout.buffer
            partial = None
        else:
            # Written beside the target and renamed at the end: a failed export leaves no file that
            # looks like a backup.
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
            out, partial = os.fdopen(fd, "wb"), Path(name)
        try:
            result = await export(
                engine,
                out,
                expect_head=args.expect_head,
                configured_master_key=settings.master_key,
                include_master_key=args.include_master_key,
            )
            out.flush()
            if partial is not None and target is not None:
                os.fsync(out.fileno())
                out.close()
                partial.replace(target)
                partial = None
        except ExportRefused as exc:
            print(f"导出被拒绝 export refused: {exc}", file=sys.stderr)
            return 1
        finally:
            if partial is not None:
                out.close()
                partial.unlink(missing_ok=True)
        counts = result.counts
        print(
            f"已导出 exported {counts['record']:,} records (head seq {result.head_seq}, "
            f"{result.head_hash}), {counts['party_key']:,} party keys, {counts['party']:,} parties, "
            f"{counts['api_key']:,} API keys in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
        return 0

    return asyncio.run(with_engine(settings, run))


def _cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    if _bad_head(args.expect_head):
        return 2
    from services.archive_io import ArchiveFileError, read_all

    try:
        with Path(args.file).open("rb") as raw:
            reader = read_all(raw, args.expect_head)
    except OSError as exc:
        print(f"无法读取 cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except ArchiveFileError as exc:
        print(f"备份文件无效 invalid backup file: {exc}", file=sys.stderr)
        return 1
    assert reader.header is not None
    print(
        f"备份文件完整 backup intact: {reader.counts['record']:,} records, head {reader.header.head_hash}, "
        f"exported {reader.header.exported_at.isoformat()}"
    )
    if reader.checker.anchored_at is not None:
        print(f"  the expected head is the hash of seq {reader.checker.anchored_at}")
    return 0


def _cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    if _bad_head(args.expect_head):
        return 2
    if settings.kafka_bootstrap is None:
        print("配置错误 configuration error: LIANDONG_KAFKA_BOOTSTRAP is required", file=sys.stderr)
        return 2
    path = Path(args.file)
    if not path.is_file():
        print(f"无法读取 cannot read {args.file}: not a file", file=sys.stderr)
        return 2
    from services.archive_io import ArchiveFileError
    from services.archive_restore import RecordError, RestoreFailed, RestoreRefused, restore

    def report(line: str) -> None:
        print(f"restore: {line}", file=sys.stderr, flush=True)

    try:
        result = asyncio.run(restore(settings, path, expect_head=args.expect_head, report=report))
    except (ArchiveFileError, RecordError) as exc:
        print(f"备份文件无效 invalid backup file, nothing written: {exc}", file=sys.stderr)
        return 1
    except RestoreRefused as exc:
        print(f"恢复被拒绝 restore refused, nothing written: {exc}", file=sys.stderr)
        return 1
    except RestoreFailed as exc:
        print(f"恢复失败 restore failed: {exc}", file=sys.stderr)
        return 1
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(
        f"已恢复 restored {result.counts['record']:,} records (head seq {result.head_seq}, "
        f"{result.head_hash}); {result.replay.applied:,} events projected; {phases}"
    )
    return 0
