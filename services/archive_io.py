"""The archive's backup file (docs/backup.md): its format, writing it from a store, reading it back.

A gzip stream of UTF-8 JSON lines, one object per line, each naming its kind in `t`, in this order:

    header        format, version, exported_at, store_instance, head {seq, hash, updated_at},
                  master_key_check, master_key (base64, only with --include-master-key)
    party_key*    the rows of `party_keys`: data keys wrapped under the master key; shredded stay NULL
    party*        the rows of `parties`: each party's latest ciphertexts
    api_key*      the rows of `api_keys`: key ids and SHA-256 of the secrets, never a secret
    record*       the rows of `archive`, in seq order: seq, event_id, subject, record, prev_hash, hash
    end           the count of every section, the head hash, and the SHA-256 of every line before it

What is not derivable from the events is carried, nothing else: the projections are rebuilt from the
records. The reader checks everything while it streams, with memory bounded by the number of party
and key rows, never by the number of records: the format and version, the order of the sections, the
type of every field, duplicates, the hash chain (`projections.archive.ChainChecker`), the head named
by the header and the end line, the counts and the digest. A file that is cut short has no end line.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import Boolean, DateTime, Integer, LargeBinary, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections import archive as chain
from projections.archive_store import CHAIN, read_head
from projections.migrate import INSTANCE_KEY
from projections.pii import MASTER_CHECK_META, MASTER_KEY_META, MasterKey
from projections.schema import api_keys, archive, archive_head, hub_meta, parties, party_keys

FORMAT = "liandong-archive"
VERSION = 1
# A record holds one event: a few kB at most (strings are bounded at 8,192 characters by the
# catalog's JSON rules). A line far beyond that is not an export of ours, and must not be buffered.
MAX_LINE = 4 * 1024 * 1024
PAGE = 2_000

# The sections, in file order; the table each row section restores.
SECTIONS: tuple[str, ...] = ("header", "party_key", "party", "api_key", "record", "end")
TABLES: Mapping[str, Table] = {"party_key": party_keys, "party": parties, "api_key": api_keys}
_RECORD_FIELDS = {
    "t": str,
    "seq": int,
    "event_id": str,
    "subject": str,
    "record": str,
    "prev_hash": str,
    "hash": str,
}
_HEX64 = frozenset("0123456789abcdef")


class ArchiveFileError(ValueError):
    """The file cannot be restored: which line, and why."""

    def __init__(self, line: int | None, detail: str) -> None:
        super().__init__(f"line {line}: {detail}" if line is not None else detail)
        self.line = line
        self.detail = detail


class ExportRefused(RuntimeError):
    """Nothing usable was written: the chain is broken, or the file could not restore personal data."""


@dataclass(frozen=True, slots=True)
class Header:
    exported_at: datetime
    store_instance: str
    head_seq: int
    head_hash: str
    head_updated_at: datetime | None
    master_key_check: str | None
    master_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class TableRow:
    """A row of `party_keys`, `parties` or `api_keys`, as values ready to insert."""

    section: str
    values: Mapping[str, Any]

    @property
    def table(self) -> Table:
        return TABLES[self.section]


@dataclass(frozen=True, slots=True)
class End:
    counts: Mapping[str, int]  # section -> rows
    head: str
    sha256: str


Entry = Header | TableRow | chain.ArchivedRow | End


# --- values ----------------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _to_json(column: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(column.type, DateTime):
        return _utc(value).isoformat()
    if isinstance(column.type, LargeBinary):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def _from_json(column: Any, value: Any, where: str) -> Any:
    if value is None:
        if not column.nullable:
            raise ValueError(f"{where}: must not be null")
        return None
    kind = column.type
    if isinstance(kind, DateTime):
        return _time(value, where)
    if isinstance(kind, LargeBinary):
        if not isinstance(value, str):
            raise ValueError(f"{where}: must be base64 text")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{where}: is not valid base64") from None
    if isinstance(kind, Boolean):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: must be true or false")
        return value
    if isinstance(kind, Integer):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: must be an integer")
        return value
    if isinstance(kind, String):  # Text too
        if not isinstance(value, str):
            raise ValueError(f"{where}: must be text")
        if kind.length is not None and len(value) > kind.length:
            raise ValueError(f"{where}: longer than {kind.length} characters")
        return value
    raise ValueError(f"{where}: unsupported column type {kind}")  # pragma: no cover - schema drift


def _time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{where}: must be an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{where}: the time must carry an offset")
    return moment.astimezone(UTC)


def _line(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and _HEX64.issuperset(value)


# --- reading -------------------------------------------------------------------------------------


def _lines(raw: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    number = 0
    with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
        while True:
            try:
                line = unzipped.readline(MAX_LINE + 1)
            except EOFError:
                raise ArchiveFileError(
                    number + 1, "the file is cut short (the gzip stream ends early)"
                ) from None
            except gzip.BadGzipFile as exc:
                if number == 0:
                    raise ArchiveFileError(None, f"not a backup file: not gzip ({exc})") from None
                raise ArchiveFileError(number + 1, f"the compressed data is damaged ({exc})") from None
            except (zlib.error, OSError) as exc:
                raise ArchiveFileError(number + 1, f"the compressed data is damaged ({exc})") from None
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE:
                raise ArchiveFileError(number, f"longer than {MAX_LINE:,} bytes: not a line of a backup file")
            if not line.endswith(b"\n"):
                raise ArchiveFileError(number, "the last line is cut short (no newline)")
            yield number, line


class ArchiveReader:
    """Iterate the entries of a backup file, checking each as it goes; raise `ArchiveFileError` at the
    first problem. When the iteration ends normally, the whole file was checked."""

    def __init__(self, raw: IO[bytes], expect_head: str | None = None) -> None:
        self._raw = raw
        self.checker = chain.ChainChecker(expect_head)
        self.header: Header | None = None
        self.end: End | None = None
        self.counts: dict[str, int] = dict.fromkeys(TABLES, 0) | {"record": 0}

    def __iter__(self) -> Iterator[Entry]:
        digest = hashlib.sha256()
        stage = -1
        seen: dict[str, set[tuple[Any, ...]]] = {section: set() for section in TABLES}
        for number, line in _lines(self._raw):
            if self.end is not None:
                raise ArchiveFileError(number, "data after the end line")
            document = _parse(number, line)
            kind = document.get("t")
            if kind not in SECTIONS:
                raise ArchiveFileError(number, f"unknown line kind {kind!r}")
            index = SECTIONS.index(kind)
            if stage == -1 and kind != "header":
                raise ArchiveFileError(number, "not a backup file: the first line is not its header")
            if index < stage or (kind == "header" and stage != -1):
                raise ArchiveFileError(
                    number, f"a {kind} line after the {SECTIONS[stage]} lines: out of order"
                )
            stage = index
            if kind == "end":
                self.end = self._end(number, document, digest.hexdigest())
                yield self.end
                continue
            digest.update(line)
            if kind == "header":
                self.header = _header(number, document)
                yield self.header
            elif kind == "record":
                yield self._record(number, document)
            else:
                row = _table_row(number, kind, document)
                key = tuple(row.values[c.name] for c in row.table.primary_key.columns)
                if key in seen[kind]:
                    raise ArchiveFileError(number, f"duplicate {kind} {'/'.join(map(str, key))}")
                seen[kind].add(key)
                self.counts[kind] += 1
                yield row
        if self.header is None:
            raise ArchiveFileError(None, "not a backup file: it is empty")
        if self.end is None:
            raise ArchiveFileError(
                None, f"the file is cut short: no end line after {self.counts['record']:,} records"
            )

    def _record(self, number: int, document: Mapping[str, Any]) -> chain.ArchivedRow:
        if set(document) != set(_RECORD_FIELDS):
            raise ArchiveFileError(number, f"a record has the fields {', '.join(sorted(_RECORD_FIELDS))}")
        for name, kind in _RECORD_FIELDS.items():
            value = document[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ArchiveFileError(number, f"record.{name}: must be {kind.__name__}")
        row = chain.ArchivedRow(
            document["seq"],
            document["event_id"],
            document["subject"],
            document["record"],
            document["prev_hash"],
            document["hash"],
        )
        last = self.checker.last_seq
        if row.seq == last and self.checker.count:
            raise ArchiveFileError(number, f"duplicate record seq {row.seq}")
        if row.seq < last:
            raise ArchiveFileError(number, f"records out of order: seq {row.seq} after seq {last}")
        broken = self.checker.feed(row)
        if broken is not None:
            raise ArchiveFileError(number, f"the chain is broken at {broken.describe()}")
        self.counts["record"] += 1
        return row

    def _end(self, number: int, document: Mapping[str, Any], digest: str) -> End:
        header = self.header
        assert header is not None  # the section order puts the header first
        counts = document.get("counts")
        if not isinstance(counts, dict) or set(counts) != set(self.counts):
            raise ArchiveFileError(number, f"end.counts: must name {', '.join(sorted(self.counts))}")
        head = document.get("head")
        if not _is_hash(head) or not isinstance(document.get("sha256"), str):
            raise ArchiveFileError(number, "end: head and sha256 must be hex digests")
        if document["sha256"] != digest:
            raise ArchiveFileError(number, "the file's digest does not match its lines: a line was changed")
        for section, count in self.counts.items():
            if counts[section] != count:
                raise ArchiveFileError(
                    number,
                    f"the end line counts {counts[section]!r} {section} lines, the file holds {count:,}",
                )
        broken = self.checker.finish(header.head_seq, header.head_hash)
        if broken is not None:
            raise ArchiveFileError(
                number, f"the chain does not lead to the header's head: {broken.describe()}"
            )
        if head != header.head_hash:
            raise ArchiveFileError(number, "the end line names another head than the header")
        return End(dict(counts), str(head), digest)


def _parse(number: int, line: bytes) -> dict[str, Any]:
    try:
        document = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ArchiveFileError(number, "not a JSON line") from None
    if not isinstance(document, dict):
        raise ArchiveFileError(number, "not a JSON object")
    return document


def _header(number: int, document: Mapping[str, Any]) -> Header:
    if document.get("format") != FORMAT:
        raise ArchiveFileError(
            number, f"not a backup file: format {document.get('format')!r}, not {FORMAT!r}"
        )
    if document.get("version") != VERSION:
        raise ArchiveFileError(
            number, f"version {document.get('version')!r} is not supported (this hub reads version {VERSION})"
        )
    head = document.get("head")
    if not isinstance(head, dict) or not _is_hash(head.get("hash")):
        raise ArchiveFileError(number, "header.head: must be {seq, hash, updated_at}")
    seq = head.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ArchiveFileError(number, "header.head.seq: must be an integer, 0 or more")
    check, key, instance = (document.get(k) for k in ("master_key_check", "master_key", "store_instance"))
    if not isinstance(instance, str) or not (check is None or isinstance(check, str)):
        raise ArchiveFileError(number, "header: store_instance and master_key_check must be text")
    try:
        exported_at = _time(document.get("exported_at"), "header.exported_at")
        updated_at = (
            None if head.get("updated_at") is None else _time(head["updated_at"], "header.head.updated_at")
        )
        secret = None if key is None else base64.b64decode(str(key), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ArchiveFileError(number, str(exc)) from None
    if secret is not None:
        if len(secret) != 32:
            raise ArchiveFileError(number, "header.master_key: must be 32 bytes")
        if MasterKey(secret).check != check:
            raise ArchiveFileError(number, "header.master_key: does not match master_key_check")
    return Header(exported_at, instance, seq, str(head["hash"]), updated_at, check, secret)


def _table_row(number: int, section: str, document: Mapping[str, Any]) -> TableRow:
    table = TABLES[section]
    names = {c.name for c in table.columns}
    extra, missing = set(document) - names - {"t"}, names - set(document)
    if extra or missing:
        problem = f"unknown field {sorted(extra)[0]}" if extra else f"missing field {sorted(missing)[0]}"
        raise ArchiveFileError(number, f"{section}: {problem}")
    try:
        values = {c.name: _from_json(c, document[c.name], f"{section}.{c.name}") for c in table.columns}
    except ValueError as exc:
        raise ArchiveFileError(number, str(exc)) from None
    return TableRow(section, values)


def read_all(raw: IO[bytes], expect_head: str | None = None) -> ArchiveReader:
    """Check a whole file; return the reader, with its header, end and counts."""
    reader = ArchiveReader(raw, expect_head)
    for _entry in reader:
        pass
    return reader


# --- writing -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportResult:
    counts: Mapping[str, int]
    head_seq: int
    head_hash: str


class ArchiveWriter:
    """Writes the lines of one file in order, with the running digest the end line carries."""

    def __init__(self, out: IO[bytes]) -> None:
        self._zip = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0)
        self._digest = hashlib.sha256()
        self.counts: dict[str, int] = dict.fromkeys(TABLES, 0) | {"record": 0}

    def write(self, document: Mapping[str, Any]) -> None:
        line = _line(document)
        self._digest.update(line)
        self._zip.write(line)

    def row(self, section: str, row: Mapping[str, Any]) -> None:
        table = TABLES[section]
        self.write({"t": section} | {c.name: _to_json(c, row[c.name]) for c in table.columns})
        self.counts[section] += 1

    def record(self, row: chain.ArchivedRow) -> None:
        self.write(
            {
                "t": "record",
                "seq": row.seq,
                "event_id": row.event_id,
                "subject": row.subject,
                "record": row.record,
                "prev_hash": row.prev_hash,
                "hash": row.hash,
            }
        )
        self.counts["record"] += 1

    def finish(self, head: str) -> None:
        self._zip.write(
            _line({"t": "end", "counts": self.counts, "head": head, "sha256": self._digest.hexdigest()})
        )
        self._zip.close()


async def _stream(conn: AsyncConnection, query: Any) -> AsyncIterator[Any]:
    # A server-side cursor on PostgreSQL: memory stays at one page whatever the table holds.
    result = await conn.stream(query.execution_options(yield_per=PAGE))
    async for page in result.mappings().partitions(PAGE):
        for row in page:
            yield row


async def _meta(conn: AsyncConnection) -> dict[str, str]:
    keys = (INSTANCE_KEY, MASTER_KEY_META, MASTER_CHECK_META)
    rows = await conn.execute(select(hub_meta.c.key, hub_meta.c.value).where(hub_meta.c.key.in_(keys)))
    return {str(k): str(v) for k, v in rows}


async def export(
    engine: AsyncEngine,
    out: IO[bytes],
    *,
    expect_head: str | None = None,
    configured_master_key: bytes | None = None,
    include_master_key: bool = False,
    now: datetime | None = None,
) -> ExportResult:
    """Write the store's archive to `out`, checking the chain as it goes. Raises `ExportRefused` when
    the chain is broken (the end line is then never written, so the file cannot be restored)."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # One snapshot for every section: keys shredded meanwhile are shredded in none of them.
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            head = await read_head(conn)
            if head is None and await conn.scalar(select(archive.c.seq).limit(1)) is not None:
                raise ExportRefused("审计链断裂 chain broken: the head row is gone (`liandong audit verify`)")
            meta = await _meta(conn)
            live = await conn.scalar(
                select(func.count()).select_from(party_keys).where(party_keys.c.wrapped_key.is_not(None))
            )
            secret = _master_key_to_carry(meta, configured_master_key, include_master_key, int(live or 0))
            head_seq, head_hash = (head.seq, head.hash) if head else (0, chain.GENESIS)
            updated = await conn.scalar(
                select(archive_head.c.updated_at).where(archive_head.c.chain == CHAIN)
            )
            writer = ArchiveWriter(out)
            writer.write(
                {
                    "t": "header",
                    "format": FORMAT,
                    "version": VERSION,
                    "exported_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(),
                    "store_instance": meta.get(INSTANCE_KEY, ""),
                    "head": {
                        "seq": head_seq,
                        "hash": head_hash,
                        "updated_at": None if updated is None else _utc(updated).isoformat(),
                    },
                    "master_key_check": meta.get(MASTER_CHECK_META),
                    "master_key": None if secret is None else base64.b64encode(secret).decode("ascii"),
                }
            )
            for section, table in TABLES.items():
                async for row in _stream(conn, select(table).order_by(*table.primary_key.columns)):
                    writer.row(section, row)
            checker = chain.ChainChecker(expect_head)
            a = archive.c
            query = (
                select(a.seq, a.event_id, a.subject, a.record, a.prev_hash, a.hash)
                .where(a.seq <= head_seq)
                .order_by(a.seq)
            )
            async for found in _stream(conn, query):
                row = chain.ArchivedRow(**dict(found))
                if checker.feed(row) is not None:
                    break
                writer.record(row)
            broken = checker.finish(head_seq, head_hash)
            if broken is not None:
                raise ExportRefused(
                    f"审计链断裂 chain broken at {broken.describe()}: nothing usable was written"
                )
            writer.finish(head_hash)
    return ExportResult(dict(writer.counts), head_seq, head_hash)


def _master_key_to_carry(
    meta: Mapping[str, str], configured: bytes | None, include: bool, live_keys: int
) -> bytes | None:
    check = meta.get(MASTER_CHECK_META)
    stored = meta.get(MASTER_KEY_META)
    if configured is not None and check is not None and MasterKey(configured).check != check:
        raise ExportRefused(
            "LIANDONG_MASTER_KEY is not the key this store's party keys are wrapped under "
            f"(hub_meta {MASTER_CHECK_META})"
        )
    if include:
        # A store that never held a party has no key yet, and its file needs none: the flag is a
        # standing instruction in docs/backup.md's move off the laptop, so it is not an error here.
        return configured if configured is not None else (base64.b64decode(stored) if stored else None)
    if stored is not None and configured is None and live_keys:
        raise ExportRefused(
            f"the master key is kept in this database (LIANDONG_MASTER_KEY is not set), and {live_keys:,} "
            "party key(s) are wrapped under it: without it a restore could not read anyone's personal data. "
            "Pass --include-master-key (then guard the file as you guard the key), or set "
            "LIANDONG_MASTER_KEY on the hub and keep it apart from the backups"
        )
    return None
