"""The backup file (services/archive_io.py, docs/backup.md): what a good file reads as, and a clear
error for every kind of bad one; records turned back into events (services/archive_restore.py)."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from events.catalog import Catalog
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections import archive as chain
from projections import pii
from services.archive_io import MAX_LINE, ArchiveFileError, ArchiveWriter, read_all
from services.archive_restore import RecordError, RestoreRefused, scan
from tests.support import case_event, catalog_event

T = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
MASTER = pii.MasterKey(bytes(range(32)))
KEY_ID, DATA_KEY = "k" * 32, bytes(range(32, 64))
PERSON = {"party_name": "欧阳明轩", "party_id_number": "440113199001011234"}

Lines = list[dict[str, Any]]


def record_line(seq: int, prev: str, event: Any, sealed: dict[str, Any] | None = None) -> dict[str, Any]:
    data = chain.json_safe(dict(event.data)) | (sealed or {})
    record = chain.record_text(
        event_id=event.id,
        event_type=event.type,
        source=event.source,
        subject=event.subject,
        time_=event.time,
        specversion="1.0",
        topic="liandong.case.events",
        partition=seq % 3,
        offset=seq,
        data=data,
    )
    return {
        "t": "record",
        "seq": seq,
        "event_id": event.id,
        "subject": event.subject,
        "record": record,
        "prev_hash": prev,
        "hash": chain.link_hash(prev, record),
    }


def seal(kind: str, value: str, key_id: str = KEY_ID) -> dict[str, str]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return {"enc": pii.encrypt(AESGCM(DATA_KEY), key_id, kind, value), "key": key_id}


def party_key(key_id: str = KEY_ID, *, shredded: bool = False) -> dict[str, Any]:
    import base64

    wrapped = None if shredded else base64.b64encode(MASTER.wrap(key_id, DATA_KEY)).decode()
    return {
        "t": "party_key",
        "key_id": key_id,
        "party_ref": f"erased-{key_id}" if shredded else "r" * 32,
        "wrapped_key": wrapped,
        "created_at": T.isoformat(),
        "last_seen_at": T.isoformat(),
        "shredded_at": T.isoformat() if shredded else None,
    }


def good_lines(count: int = 4, *, sealed: bool = True) -> Lines:
    """A header, one party key, `count` records (the first naming the party), no end line yet."""
    events = [
        catalog_event("case.filed.v1", "F-1", time_=T, **PERSON),
        *(case_event("closed", f"F-{i}", time_=T) for i in range(2, count + 1)),
    ]
    rows: Lines = []
    prev = chain.GENESIS
    for seq, event in enumerate(events, start=1):
        extra = (
            {
                "party_name": seal("name", PERSON["party_name"]),
                "party_id_number": seal("id_number", PERSON["party_id_number"]),
            }
            if seq == 1 and sealed
            else None
        )
        rows.append(record_line(seq, prev, event, extra))
        prev = rows[-1]["hash"]
    header = {
        "t": "header",
        "format": "liandong-archive",
        "version": 1,
        "exported_at": T.isoformat(),
        "store_instance": "abc",
        "head": {"seq": count, "hash": prev, "updated_at": T.isoformat()},
        "master_key_check": MASTER.check,
        "master_key": None,
    }
    return [header, party_key(), *rows]


def pack(
    lines: Lines, *, end: bool = True, tweak_end: Callable[[dict[str, Any]], None] | None = None
) -> bytes:
    """The file for `lines`, with a correct end line (then `tweak_end` may spoil it)."""
    raw = b"".join((json.dumps(x, ensure_ascii=False, separators=(",", ":")) + "\n").encode() for x in lines)
    if end:
        import hashlib

        counts = {
            s: sum(1 for x in lines if x["t"] == s) for s in ("party_key", "party", "api_key", "record")
        }
        head = lines[0]["head"]["hash"] if lines and lines[0].get("t") == "header" else chain.GENESIS
        trailer = {"t": "end", "counts": counts, "head": head, "sha256": hashlib.sha256(raw).hexdigest()}
        if tweak_end is not None:
            tweak_end(trailer)
        raw += (json.dumps(trailer) + "\n").encode()
    return gzip.compress(raw)


def read(data: bytes, expect_head: str | None = None) -> Any:
    return read_all(io.BytesIO(data), expect_head)


def refused(data: bytes, match: str, expect_head: str | None = None) -> None:
    with pytest.raises(ArchiveFileError, match=match):
        read(data, expect_head)


def test_a_good_file_reads_back_with_its_header_counts_and_head() -> None:
    lines = good_lines()
    reader = read(pack(lines))
    assert reader.header.head_seq == 4
    assert reader.counts == {"party_key": 1, "party": 0, "api_key": 0, "record": 4}
    assert reader.end.head == lines[-1]["hash"]
    # An anchor anywhere in the chain is accepted, and where it is found is told.
    assert read(pack(lines), expect_head=lines[3]["hash"]).checker.anchored_at == 2


def test_the_writer_and_the_reader_agree() -> None:
    out = io.BytesIO()
    writer = ArchiveWriter(out)
    lines = good_lines(3)
    writer.write(lines[0])
    writer.write(lines[1])
    writer.counts["party_key"] += 1
    for line in lines[2:]:
        writer.record(
            chain.ArchivedRow(
                *(line[k] for k in ("seq", "event_id", "subject", "record", "prev_hash", "hash"))
            )
        )
    writer.finish(lines[-1]["hash"])
    reader = read(out.getvalue())
    assert reader.counts == {"party_key": 1, "party": 0, "api_key": 0, "record": 3}
    assert reader.end.head == lines[-1]["hash"]
    body = gzip.decompress(out.getvalue()).splitlines()[:-1]  # all but the end line, as the test writes them
    assert body == gzip.decompress(pack(lines, end=False)).splitlines()


def test_an_empty_archive_is_a_valid_file() -> None:
    header = good_lines()[0] | {"head": {"seq": 0, "hash": chain.GENESIS, "updated_at": None}}
    assert read(pack([header])).counts["record"] == 0


@pytest.mark.parametrize(
    ("what", "mutate", "match"),
    [
        ("wrong format", lambda ls: ls[0].update(format="pg_dump"), "not a backup file: format 'pg_dump'"),
        ("wrong version", lambda ls: ls[0].update(version=2), "version 2 is not supported"),
        ("header missing", lambda ls: ls.pop(0), "first line is not its header"),
        ("bad head hash", lambda ls: ls[0]["head"].update(hash="xyz"), r"header.head: must be"),
        (
            "bad time",
            lambda ls: ls[1].update(created_at="yesterday"),
            "party_key.created_at: must be an ISO 8601",
        ),
        ("naive time", lambda ls: ls[1].update(created_at="2026-11-02T01:00:00"), "must carry an offset"),
        (
            "bad base64",
            lambda ls: ls[1].update(wrapped_key="!!"),
            "party_key.wrapped_key: is not valid base64",
        ),
        ("unknown field", lambda ls: ls[1].update(colour="red"), "party_key: unknown field colour"),
        ("missing field", lambda ls: ls[1].pop("party_ref"), "party_key: missing field party_ref"),
        ("duplicate key", lambda ls: ls.insert(2, dict(ls[1])), f"duplicate party_key {KEY_ID}"),
        ("unknown kind", lambda ls: ls.insert(2, {"t": "backdoor"}), "unknown line kind 'backdoor'"),
        (
            "section order",
            lambda ls: ls.append(party_key("z" * 32)),
            "a party_key line after the record lines",
        ),
        ("second header", lambda ls: ls.insert(1, dict(ls[0])), "a header line after the header lines"),
        (
            "edited record",
            lambda ls: ls[3].update(record=ls[3]["record"].replace("closed", "kept")),
            "edited",
        ),
        ("edited hash", lambda ls: ls[3].update(hash="0" * 64), "chain is broken at seq 2"),
        ("duplicate row", lambda ls: ls.insert(4, dict(ls[3])), "duplicate record seq 2"),
        ("reordered rows", lambda ls: ls.insert(3, ls.pop(4)), "chain is broken at seq 2 .*missing"),
        ("out of order", lambda ls: ls.append(dict(ls[2])), "records out of order: seq 1 after seq 4"),
        ("deleted row", lambda ls: ls.pop(3), "missing"),
        ("record field type", lambda ls: ls[3].update(seq="2"), "record.seq: must be int"),
        ("record fields", lambda ls: ls[3].pop("subject"), "a record has the fields"),
        ("head beyond the chain", lambda ls: ls.pop(), "the chain does not lead to the header's head"),
    ],
)
def test_a_bad_file_names_the_line_and_the_reason(
    what: str, mutate: Callable[[Lines], Any], match: str
) -> None:
    lines = good_lines()
    mutate(lines)
    refused(pack(lines), match)


def test_a_changed_line_outside_the_chain_fails_the_digest() -> None:
    lines = good_lines()
    good = pack(lines)
    lines[1]["party_ref"] = "s" * 32  # party keys are not in the chain: the digest covers them
    raw = gzip.decompress(good).split(b"\n")
    raw[1] = json.dumps(lines[1], separators=(",", ":")).encode()
    refused(gzip.compress(b"\n".join(raw)), "digest does not match")


def test_end_line_problems() -> None:
    refused(pack(good_lines(), end=False), "cut short: no end line after 4 records")
    refused(pack(good_lines(), tweak_end=lambda e: e["counts"].update(record=5)), "counts 5 record lines")
    refused(pack(good_lines(), tweak_end=lambda e: e.update(head="1" * 64)), "another head")
    refused(pack(good_lines(), tweak_end=lambda e: e.pop("counts")), "end.counts")
    data = gzip.decompress(pack(good_lines())) + b'{"t":"record"}\n'
    refused(gzip.compress(data), "data after the end line")


def test_files_that_are_not_backups_or_are_cut_short() -> None:
    refused(b"PGDMP\x01\x0e", "not gzip")
    refused(gzip.compress(b""), "it is empty")
    refused(gzip.compress(b"hello\n"), "line 1: not a JSON line")
    refused(gzip.compress(b"[1, 2]\n"), "line 1: not a JSON object")
    whole = pack(good_lines())
    refused(whole[: len(whole) // 2], "cut short")
    cut = gzip.decompress(whole)[:-1]  # the last newline lost
    refused(gzip.compress(cut), "cut short")


def test_an_oversize_line_is_refused_without_being_buffered_whole() -> None:
    lines = good_lines()
    lines[1]["party_ref"] = "x" * (MAX_LINE + 10)
    refused(pack(lines, end=False), f"line 2: longer than {MAX_LINE:,} bytes")


def test_expect_head_not_in_the_file() -> None:
    refused(pack(good_lines()), "anchored head 1{64} is not in the chain", expect_head="1" * 64)


def test_a_carried_master_key_must_match_its_fingerprint() -> None:
    import base64

    lines = good_lines()
    lines[0]["master_key"] = base64.b64encode(bytes(32)).decode()
    refused(pack(lines), "does not match master_key_check")
    lines[0]["master_key"] = base64.b64encode(MASTER.secret).decode()
    assert read(pack(lines)).header.master_key == MASTER.secret


# --- records back into events --------------------------------------------------------------------


@pytest.fixture
async def codec() -> EventCodec:
    codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await codec.prepare()
    return codec


def write(tmp_path: Path, lines: Lines) -> Path:
    path = tmp_path / "backup.gz"
    path.write_bytes(pack(lines))
    return path


async def test_every_record_turns_back_into_its_event_with_personal_data_in_clear(
    codec: EventCodec, tmp_path: Path
) -> None:
    checked = scan(write(tmp_path, good_lines()), codec, MASTER.secret, None)
    assert checked.partitions == {"liandong.case.events": 3}
    lines = good_lines()
    first = chain.ArchivedRow(
        *(lines[2][k] for k in ("seq", "event_id", "subject", "record", "prev_hash", "hash"))
    )
    topic, partition, encoded = checked.rebuilder.encoded(first)
    event = codec.decode(encoded.value, encoded.headers)
    assert (topic, partition, encoded.key) == ("liandong.case.events", 1, b"F-1")
    assert (event.id, event.time) == (first.event_id, T)
    assert {k: event.data[k] for k in PERSON} == PERSON


async def test_a_shredded_person_goes_back_to_the_topics_erased(codec: EventCodec, tmp_path: Path) -> None:
    lines = good_lines()
    lines[1] = party_key(shredded=True)
    checked = scan(write(tmp_path, lines), codec, None, None)  # no live key: no master key needed
    first = chain.ArchivedRow(
        *(lines[2][k] for k in ("seq", "event_id", "subject", "record", "prev_hash", "hash"))
    )
    event = codec.decode(*(lambda e: (e.value, e.headers))(checked.rebuilder.encoded(first)[2]))
    assert event.data["party_name"] is None
    assert event.data["party_id_number"] is None


async def test_records_that_cannot_become_events_are_refused_before_anything_is_written(
    codec: EventCodec, tmp_path: Path
) -> None:
    with pytest.raises(RestoreRefused, match="no master key"):
        scan(write(tmp_path, good_lines()), codec, None, None)
    with pytest.raises(RestoreRefused, match="not the key the file's party keys are wrapped under"):
        scan(write(tmp_path, good_lines()), codec, bytes(32), None)
    unknown_key = good_lines()
    unknown_key[1] = party_key("q" * 32)
    with pytest.raises(RecordError, match=f"seq 1 .*names data key {KEY_ID}, which the file does not carry"):
        scan(write(tmp_path, unknown_key), codec, MASTER.secret, None)
    # A record whose data no longer fits its schema: the chain is intact (re-hashed), the event is not.
    lines = good_lines(1, sealed=False)
    event = case_event("closed", "F-9", time_=T, data={"closure_reason": 42})
    lines[2] = record_line(1, chain.GENESIS, event)
    lines[0]["head"]["hash"] = lines[2]["hash"]
    with pytest.raises(RecordError, match=r"seq 1 .*does not fit the schema.*closure_reason"):
        scan(write(tmp_path, lines), codec, MASTER.secret, None)
