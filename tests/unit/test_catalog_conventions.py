"""Every schema in the catalog follows the same conventions (docs/events.md is built from them)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from events.catalog import Catalog

CATALOG = Catalog.load()
TYPE_NAME = re.compile(r"cn\.gov\.liandong\.([a-z][a-z_]*)\.([a-z][a-z_]*)\.v([1-9][0-9]*)")
CJK = re.compile(r"[\u4e00-\u9fff]")
LATIN = re.compile(r"[A-Za-z]{3}")
PII_KINDS = {"name", "id_number", "phone", "address"}
REF_KINDS = {"township", "unit"}
PERSONAL_NAMES = re.compile(
    r"(_phone|_id_number|_address|^party_name|_person_name|^applicant_name"
    r"|^complainant_name|^reporter_name|^supervisor_name|^contact_name)$"
)
AREAS_WITHOUT_CASE_LINK = {"case", "directory"}

KINDS = [pytest.param(kind, id=kind.short_type) for kind in CATALOG]
REVISIONS = [
    pytest.param(kind.type, schema, id=f"{kind.short_type}@{n}")
    for kind in CATALOG
    for n, schema in enumerate(kind.revisions, start=1)
]


def fields(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every field, nested records included, with a dotted path."""
    for f in schema.get("fields", []):
        yield f"{path}{f['name']}", f
        for branch in _branches(f["type"]):
            if isinstance(branch, dict) and branch.get("type") == "record":
                yield from fields(branch, f"{path}{f['name']}.")
            if (
                isinstance(branch, dict)
                and branch.get("type") == "array"
                and isinstance(branch["items"], dict)
            ) and branch["items"].get("type") == "record":
                yield from fields(branch["items"], f"{path}{f['name']}[].")


def _branches(t: Any) -> list[Any]:
    return t if isinstance(t, list) else [t]


def enums(t: Any) -> Iterator[Mapping[str, Any]]:
    for branch in _branches(t):
        if isinstance(branch, dict):
            if branch.get("type") == "enum":
                yield branch
            elif branch.get("type") == "array":
                yield from enums(branch["items"])
            elif branch.get("type") == "record":
                for f in branch["fields"]:
                    yield from enums(f["type"])


def bilingual(doc: object) -> bool:
    return isinstance(doc, str) and " | " in doc and bool(CJK.search(doc)) and bool(LATIN.search(doc))


def test_the_catalog_is_not_empty() -> None:
    assert len(CATALOG.kinds) >= 3


@pytest.mark.parametrize("kind", KINDS)
def test_every_type_is_named_area_event_version(kind: Any) -> None:
    match = TYPE_NAME.fullmatch(kind.type)
    assert match, kind.type
    area, _, version = match.groups()
    assert kind.family == area
    for schema in kind.revisions:
        assert schema["type"] == "record"
        assert schema["namespace"] == f"cn.gov.liandong.{area}.v{version}", kind.type


@pytest.mark.parametrize(("event_type", "schema"), REVISIONS)
def test_every_record_and_field_is_documented_in_chinese_and_english(event_type: str, schema: Any) -> None:
    assert bilingual(schema.get("doc")), f"{event_type}: record doc must be '中文 | English'"
    undocumented = [path for path, f in fields(schema) if not bilingual(f.get("doc"))]
    assert undocumented == [], f"{event_type}: fields without a '中文 | English' doc"


@pytest.mark.parametrize(("event_type", "schema"), REVISIONS)
def test_every_enum_has_a_default_so_it_may_grow(event_type: str, schema: Any) -> None:
    for _, f in fields(schema):
        for enum in enums(f["type"]):
            assert enum.get("default") in enum["symbols"], (
                f"{event_type}: enum {enum['name']} needs a default"
            )


@pytest.mark.parametrize(("event_type", "schema"), REVISIONS)
def test_personal_data_is_marked(event_type: str, schema: Any) -> None:
    for path, f in fields(schema):
        mark = f.get("liandong.pii")
        if mark is not None:
            assert mark in PII_KINDS, f"{event_type}.{path}: unknown liandong.pii {mark!r}"
        if PERSONAL_NAMES.search(f["name"]):
            assert mark in PII_KINDS, f"{event_type}.{path} looks personal and must carry liandong.pii"


@pytest.mark.parametrize(("event_type", "schema"), REVISIONS)
def test_directory_references_are_strings_of_a_known_kind(event_type: str, schema: Any) -> None:
    for path, f in fields(schema):
        ref = f.get("liandong.ref")
        if ref is None:
            continue
        assert ref in REF_KINDS, f"{event_type}.{path}"
        allowed = ("string", ["null", "string"], {"type": "array", "items": "string"})
        assert f["type"] in allowed, f"{event_type}.{path}: a reference must be a string or strings"


@pytest.mark.parametrize("kind", KINDS)
def test_coordination_events_can_link_a_case(kind: Any) -> None:
    if kind.family in AREAS_WITHOUT_CASE_LINK:
        return
    names = {f["name"]: f for f in kind.latest["fields"]}
    assert "case_id" in names, f"{kind.type} needs an optional case_id"
    assert names["case_id"]["type"] == ["null", "string"]
    assert names["case_id"].get("default", "missing") is None
