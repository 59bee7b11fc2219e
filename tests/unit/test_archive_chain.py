"""The archive's hash chain and the parties' encryption, as pure functions (docs/audit.md)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from events.catalog import PII_KINDS, Catalog
from events.masking import mask_address, mask_id_number, mask_phone
from projections import pii
from projections.archive import GENESIS, ArchivedRow, ChainChecker, json_safe, link_hash, record_text

MASTER = pii.MasterKey(bytes(range(32)))


def chain_of(n: int) -> list[ArchivedRow]:
    rows, prev = [], GENESIS
    for seq in range(1, n + 1):
        record = record_text(
            event_id=f"e{seq}",
            event_type="cn.gov.liandong.case.closed.v1",
            source="shilou.enforcement-office",
            subject=f"C{seq % 3}",
            time_=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=seq),
            specversion="1.0",
            topic="liandong.case.events",
            partition=0,
            offset=seq - 1,
            data={"closure_reason": "executed", "note": "结案"},
        )
        digest = link_hash(prev, record)
        rows.append(ArchivedRow(seq, f"e{seq}", f"C{seq % 3}", record, prev, digest))
        prev = digest
    return rows


def check(rows: list[ArchivedRow], head: tuple[int, str] | None, expect: str | None = None) -> ChainChecker:
    checker = ChainChecker(expect)
    for row in rows:
        if checker.feed(row) is not None:
            return checker
    checker.finish(*(head or (None, None)))
    return checker


def head_of(rows: list[ArchivedRow]) -> tuple[int, str]:
    return rows[-1].seq, rows[-1].hash


def forged(seq: int, prev: str, event_id: str = "forged") -> ArchivedRow:
    record = json.dumps({"id": event_id, "subject": "C9", "data": {}}, sort_keys=True, separators=(",", ":"))
    return ArchivedRow(seq, event_id, "C9", record, prev, link_hash(prev, record))


# --- records and links ---------------------------------------------------------------------------


def test_a_record_is_canonical_json_with_sorted_keys_no_spaces_and_chinese_kept_as_is() -> None:
    text = chain_of(1)[0].record
    document = json.loads(text)
    assert text == json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert "结案" in text
    assert "\\u" not in text
    assert list(document) == sorted(document)
    assert document["time"] == "2026-01-01T01:00:00+00:00"


def test_the_link_hash_is_sha256_of_the_previous_hash_a_newline_and_the_record() -> None:
    # What an outside party reimplements: nothing but hashlib.
    row = chain_of(1)[0]
    expected = hashlib.sha256(("0" * 64 + "\n" + row.record).encode("utf-8")).hexdigest()
    assert (row.prev_hash, row.hash) == (GENESIS, expected)


def test_avro_values_become_json_times_in_utc_decimals_as_text_and_bytes_as_base64() -> None:
    beijing = timezone(timedelta(hours=8))
    value = {
        "at": datetime(2026, 3, 1, 9, 30, tzinfo=beijing),
        "on": date(2026, 3, 1),
        "amount": Decimal("12.50"),
        "raw": b"\x00\xff",
        "nested": [{"n": 1, "f": 0.5, "nan": float("nan")}],
    }
    assert json_safe(value) == {
        "at": "2026-03-01T01:30:00+00:00",
        "on": "2026-03-01",
        "amount": "12.50",
        "raw": "AP8=",
        "nested": [{"n": 1, "f": 0.5, "nan": "nan"}],
    }


# --- the checker ---------------------------------------------------------------------------------


def test_an_intact_chain_verifies_and_an_empty_one_too() -> None:
    rows = chain_of(6)
    checker = check(rows, head_of(rows))
    assert (checker.broken, checker.count) == (None, 6)
    assert check([], None).broken is None
    assert check([], (0, GENESIS)).broken is None


def test_an_edited_record_is_named_by_its_seq() -> None:
    rows = chain_of(6)
    rows[2] = replace(rows[2], record=rows[2].record.replace("executed", "withdrawn"))
    broken = check(rows, head_of(rows)).broken
    assert broken is not None
    assert (broken.seq, broken.event_id, broken.kind) == (3, "e3", "edited")


def test_an_edited_event_id_column_is_caught_though_the_record_is_intact() -> None:
    rows = chain_of(6)
    rows[3] = replace(rows[3], event_id="e999")
    broken = check(rows, head_of(rows)).broken
    assert broken is not None
    assert (broken.seq, broken.kind) == (4, "edited")


def test_a_deleted_row_is_named_by_the_missing_seq() -> None:
    rows = chain_of(6)
    del rows[3]
    broken = check(rows, (6, chain_of(6)[-1].hash)).broken
    assert broken is not None
    assert (broken.seq, broken.event_id, broken.kind) == (4, None, "missing")
    assert "resumes at seq 5 (event e5)" in broken.detail


def test_a_row_forged_into_the_middle_with_the_rest_renumbered_is_named_inserted() -> None:
    rows = chain_of(6)
    fake = forged(3, rows[1].hash)  # a valid link after seq 2
    tampered = [*rows[:2], fake, *(replace(r, seq=r.seq + 1) for r in rows[2:])]
    broken = check(tampered, (7, rows[-1].hash)).broken
    assert broken is not None
    assert (broken.seq, broken.event_id, broken.kind) == (3, "forged", "inserted")


def test_a_row_appended_after_the_head_is_named_inserted() -> None:
    rows = chain_of(6)
    head = head_of(rows)
    broken = check([*rows, forged(7, rows[-1].hash)], head).broken
    assert broken is not None
    assert (broken.seq, broken.kind) == (7, "inserted")


def test_a_truncated_tail_is_caught_by_the_head_row_or_by_an_anchored_head() -> None:
    rows = chain_of(6)
    anchored = rows[-1].hash
    # The head row still names seq 6.
    broken = check(rows[:4], head_of(rows)).broken
    assert broken is not None
    assert (broken.seq, broken.kind) == (5, "missing")
    # The head row was moved back too: only the hash noted outside shows it.
    assert check(rows[:4], head_of(rows[:4])).broken is None
    broken = check(rows[:4], head_of(rows[:4]), anchored).broken
    assert broken is not None
    assert (broken.seq, broken.kind) == (5, "missing")
    assert anchored in broken.detail
    # An anchored head further back than the end is fine: the chain grew since.
    assert check(rows, head_of(rows), rows[2].hash).anchored_at == 3


def test_a_record_rewritten_with_a_fresh_hash_breaks_the_next_link() -> None:
    rows = chain_of(6)
    record = rows[2].record.replace("executed", "withdrawn")
    rows[2] = replace(rows[2], record=record, hash=link_hash(rows[2].prev_hash, record))
    broken = check(rows, head_of(rows)).broken
    assert broken is not None
    assert (broken.seq, broken.event_id) == (4, "e4")
    assert "seq 3 was rewritten" in broken.detail


def test_a_head_row_that_names_another_hash_is_a_head_mismatch() -> None:
    rows = chain_of(3)
    broken = check(rows, (3, "f" * 64)).broken
    assert broken is not None
    assert (broken.seq, broken.kind) == (3, "head_mismatch")


# --- parties' encryption -------------------------------------------------------------------------


def test_a_field_decrypts_under_its_key_and_kind_only() -> None:
    key_id, data_key = pii.new_data_key()
    cipher = AESGCM(data_key)
    sealed = pii.encrypt(cipher, key_id, "name", "张三")
    assert "张三" not in base64.b64decode(sealed).decode("latin-1")
    assert pii.decrypt(cipher, key_id, "name", sealed) == "张三"
    with pytest.raises(pii.UndecryptableField):
        pii.decrypt(cipher, key_id, "address", sealed)  # moved to another field
    with pytest.raises(pii.UndecryptableField):
        pii.decrypt(cipher, "another-key-id", "name", sealed)
    with pytest.raises(pii.UndecryptableField):
        pii.decrypt(AESGCM(AESGCM.generate_key(bit_length=256)), key_id, "name", sealed)


def test_a_data_key_unwraps_only_under_the_master_key_that_wrapped_it() -> None:
    key_id, data_key = pii.new_data_key()
    wrapped = MASTER.wrap(key_id, data_key)
    assert data_key not in wrapped
    assert MASTER.unwrap(key_id, wrapped) == data_key
    with pytest.raises(pii.MasterKeyMismatch):
        pii.MasterKey(bytes(32)).unwrap(key_id, wrapped)
    with pytest.raises(pii.MasterKeyMismatch):
        MASTER.unwrap("other", wrapped)


def test_fields_of_one_person_are_grouped_by_their_name_without_the_kind_suffix() -> None:
    groups = pii.party_fields(
        {
            "party_name": "name",
            "party_id_number": "id_number",
            "party_phone": "phone",
            "plaintiff_name": "name",
        }
    )
    assert [(g.role, dict(g.fields)) for g in groups] == [
        ("party", {"name": "party_name", "id_number": "party_id_number", "phone": "party_phone"}),
        ("plaintiff", {"name": "plaintiff_name"}),
    ]


def test_one_id_number_is_one_party_across_cases_and_a_name_only_within_its_case() -> None:
    def ref(subject: str, **values: str) -> str:
        party = pii.Party("party", values, {})
        return MASTER.party_ref(pii.reference_basis("case", subject, party))

    assert ref("C1", id_number="44011319900101123x", name="张三") == ref(
        "C2", id_number=" 44011319900101123X", name="张叁"
    )
    assert ref("C1", name="李四") == ref("C1", name="李四 ")
    assert ref("C1", name="李四") != ref("C2", name="李四")
    assert len(ref("C1", name="李四")) == 32
    # Another master key, another pepper: references of two hubs do not match.
    other = pii.MasterKey(bytes(32)).party_ref(
        pii.reference_basis("case", "C1", pii.Party("p", {"name": "李四"}, {}))
    )
    assert other != ref("C1", name="李四")


def test_empty_personal_fields_name_no_party() -> None:
    groups = pii.party_fields({"complainant_name": "name", "complainant_phone": "phone"})
    assert pii.parties_in({"complainant_name": None, "complainant_phone": "  "}, groups) == []
    [party] = pii.parties_in({"complainant_name": None, "complainant_phone": "13812345678"}, groups)
    assert party.values == {"phone": "13812345678"}


def test_every_personal_field_in_the_catalog_is_a_top_level_field_grouped_without_clashes() -> None:
    marked = 0
    for kind in Catalog.load():
        for revision in kind.revisions:
            for f in revision.get("fields", ()):
                for nested in _nested_fields(f["type"]):
                    assert "liandong.pii" not in nested, f"{kind.type}: nested PII is not encrypted"
        groups = pii.party_fields(kind.pii_fields)  # raises on an unknown kind or a clash
        marked += sum(len(g.fields) for g in groups)
        assert set(kind.pii_fields.values()) <= set(PII_KINDS)
    assert marked >= 11


def _nested_fields(avro_type: object) -> list[dict[str, object]]:
    if isinstance(avro_type, list):
        return [f for t in avro_type for f in _nested_fields(t)]
    if isinstance(avro_type, dict):
        inner = list(avro_type.get("fields", ()))
        out = [f for f in inner if isinstance(f, dict)]
        for f in out:
            out += _nested_fields(f.get("type"))
        out += _nested_fields(avro_type.get("items")) + _nested_fields(avro_type.get("values"))
        return out
    return []


def test_masks_keep_the_region_the_carrier_and_the_district_only() -> None:
    assert mask_id_number("44011319900101123X") == "440113********123X"
    assert mask_id_number("123") == "********"
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("110") == "****"
    assert mask_address("广州市番禺区市桥街道光明路1号") == "广州市番禺区***"
    assert mask_address("石楼镇") == "石***"
    assert (mask_id_number(None), mask_phone(""), mask_address(None)) == (None, "", None)
