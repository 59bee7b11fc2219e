"""Schema evolution rules, checked with Apache Avro's own compatibility checker.

DESIGN.md requires every revision of an event type to stay BACKWARD_TRANSITIVE compatible: a
reader holding revision i must read whatever any revision j <= i wrote. The checker from the
`avro` package (the reference implementation) decides; fastavro is what the hub runs on.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
    SchemaIncompatibilityType,
)

from events.catalog import Catalog
from events.mechanisms import Mechanisms

CATALOG = Catalog.load()
FILED = "cn.gov.liandong.case.filed.v1"
DECIDED = "cn.gov.liandong.case.decided.v1"
CASE_TYPES = {FILED, DECIDED, "cn.gov.liandong.case.closed.v1"}

ALL_REVISIONS = [
    pytest.param(kind.type, position, revision, id=f"{kind.short_type}@{position}")
    for kind in CATALOG
    for position, revision in enumerate(kind.revisions, start=1)
]


def compatibility(reader: Mapping[str, Any], writer: Mapping[str, Any]) -> SchemaCompatibilityResult:
    """Avro's verdict on whether `reader` can read what `writer` wrote.

    A fresh checker per pair, because the checker memoizes results by (reader, writer).
    """
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    return checker.get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )


def backward_transitive_problems(revisions: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every way in which `revisions` (oldest first) break BACKWARD_TRANSITIVE compatibility.

    Revision i, as reader, must read every revision j <= i as writer (j == i included, so that a
    single revision is still checked against itself). An empty list means compatible.
    """
    problems: list[str] = []
    for i, reader in enumerate(revisions):
        for j in range(i + 1):
            result = compatibility(reader, revisions[j])
            if result.compatibility is not SchemaCompatibilityType.compatible:
                kinds = sorted(k.value for k in result.incompatibilities)
                problems.append(
                    f"revision {i + 1} cannot read revision {j + 1}: {kinds} "
                    f"at {sorted(result.locations)} ({sorted(result.messages)})"
                )
    return problems


def with_field(schema: Mapping[str, Any], new_field: Mapping[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(dict(schema))
    changed["fields"].append(dict(new_field))
    return changed


def fields_of(schema: Any, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every record field in `schema`, including fields of records nested in field types."""
    if isinstance(schema, list):
        for branch in schema:
            yield from fields_of(branch, path)
    elif isinstance(schema, Mapping):
        if schema.get("type") == "record":
            for f in schema["fields"]:
                field_path = f"{path}.{f['name']}"
                yield field_path, f
                yield from fields_of(f["type"], field_path)
        elif schema.get("type") == "array":
            yield from fields_of(schema["items"], f"{path}[]")
        elif schema.get("type") == "map":
            yield from fields_of(schema["values"], f"{path}{{}}")


def test_the_catalog_holds_the_three_original_case_event_types_and_every_area() -> None:
    assert set(CATALOG.kinds) >= CASE_TYPES
    assert all(kind.revisions for kind in CATALOG)
    areas = set(Mechanisms.load().areas)
    assert areas, "events/mechanisms.json lists no area"
    without_types = sorted(area for area in areas if area not in CATALOG.families)
    assert without_types == [], f"areas of mechanisms.json with no event type: {without_types}"


@pytest.mark.parametrize("kind", list(CATALOG), ids=lambda k: k.short_type)
def test_every_revision_reads_every_earlier_revision_of_its_event_type(kind: Any) -> None:
    assert backward_transitive_problems(kind.revisions) == []


@pytest.mark.parametrize("kind", list(CATALOG), ids=lambda k: k.short_type)
def test_the_newest_revision_reads_every_revision_of_its_event_type(kind: Any) -> None:
    for position, revision in enumerate(kind.revisions, start=1):
        result = compatibility(kind.latest, revision)
        assert result.compatibility is SchemaCompatibilityType.compatible, (
            f"{kind.type}: newest revision cannot read revision {position}: {result.messages}"
        )


def test_the_checker_rejects_a_required_field_added_without_a_default() -> None:
    original = CATALOG.get(FILED).latest
    changed = with_field(original, {"name": "district", "type": "string", "doc": "District code."})

    result = compatibility(changed, original)

    assert result.compatibility is SchemaCompatibilityType.incompatible
    assert result.incompatibilities == [SchemaIncompatibilityType.reader_field_missing_default_value]
    assert result.messages == {"district"}
    problems = backward_transitive_problems([original, changed])
    assert len(problems) == 1
    assert problems[0].startswith("revision 2 cannot read revision 1")


def outcome_enum(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The `outcome` enum of a copy of case.decided.v1, to change in place."""
    enum: dict[str, Any] = next(f for f in schema["fields"] if f["name"] == "outcome")["type"]
    assert enum["type"] == "enum"
    return enum


def test_the_checker_rejects_an_enum_symbol_removed_from_a_later_revision() -> None:
    # Without an enum default, a reader has nowhere to put a symbol it no longer knows.
    original = copy.deepcopy(dict(CATALOG.get(DECIDED).latest))
    outcome_enum(original).pop("default", None)
    changed = copy.deepcopy(original)
    outcome_enum(changed)["symbols"].remove("transferred_to_judicial")

    problems = backward_transitive_problems([original, changed])

    assert len(problems) == 1
    assert problems[0].startswith("revision 2 cannot read revision 1")
    assert "missing_enum_symbols" in problems[0]


def test_an_enum_default_lets_a_later_revision_drop_a_symbol() -> None:
    # The reason every enum has a default: an unknown symbol resolves to it instead of failing.
    original = copy.deepcopy(dict(CATALOG.get(DECIDED).latest))
    assert "default" in outcome_enum(original)
    changed = copy.deepcopy(original)
    outcome_enum(changed)["symbols"].remove("transferred_to_judicial")
    assert outcome_enum(changed)["default"] in outcome_enum(changed)["symbols"]

    assert backward_transitive_problems([original, changed]) == []


def test_the_checker_rejects_an_incompatible_revision_even_when_it_is_not_the_newest() -> None:
    first = CATALOG.get(FILED).latest
    breaking = with_field(first, {"name": "district", "type": "string", "doc": "District code."})
    # The third revision gives the field a default, so it reads both; the second still cannot read the first.
    healed = with_field(first, {"name": "district", "type": "string", "default": "", "doc": "District."})

    problems = backward_transitive_problems([first, breaking, healed])

    assert [p.split(":")[0] for p in problems] == ["revision 2 cannot read revision 1"]


def write_revision(root: Path, short_type: str, number: int, schema: Mapping[str, Any]) -> None:
    folder = root / short_type
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{number}.avsc").write_text(json.dumps(schema, ensure_ascii=False), encoding="utf-8")


def test_a_catalog_orders_revisions_by_number_not_by_file_name(tmp_path: Path) -> None:
    first = CATALOG.get(FILED).latest
    second = with_field(
        first,
        {"name": "district_note", "type": ["null", "string"], "default": None, "doc": "District note."},
    )
    tenth = with_field(
        second, {"name": "priority", "type": ["null", "int"], "default": None, "doc": "Priority."}
    )
    # Written newest first, so that neither creation order nor name order gives 1, 2, 10.
    write_revision(tmp_path, "case.filed.v1", 10, tenth)
    write_revision(tmp_path, "case.filed.v1", 2, second)
    write_revision(tmp_path, "case.filed.v1", 1, first)

    kind = Catalog.load(tmp_path).get(FILED)

    base = len(first["fields"])
    assert [len(r["fields"]) for r in kind.revisions] == [base, base + 1, base + 2]
    assert [r["fields"][-1]["name"] for r in kind.revisions[1:]] == ["district_note", "priority"]
    assert list(kind.revisions) == [first, second, tenth]
    assert kind.latest == tenth
    assert backward_transitive_problems(kind.revisions) == []


@pytest.mark.parametrize(("event_type", "position", "revision"), ALL_REVISIONS)
def test_every_schema_revision_parses_with_fastavro(
    event_type: str, position: int, revision: Mapping[str, Any]
) -> None:
    parsed: Any = fastavro.parse_schema(dict(revision))
    assert parsed["type"] == "record"
    assert parsed["name"] == f"{revision['namespace']}.{revision['name']}"


@pytest.mark.parametrize(("event_type", "position", "revision"), ALL_REVISIONS)
def test_every_field_of_every_schema_revision_has_a_doc(
    event_type: str, position: int, revision: Mapping[str, Any]
) -> None:
    fields = list(fields_of(revision, revision["name"]))
    undocumented = [path for path, f in fields if not str(f.get("doc", "")).strip()]
    assert fields, f"{event_type} revision {position} has no fields"
    assert undocumented == [], f"{event_type} revision {position}: fields without doc: {undocumented}"
