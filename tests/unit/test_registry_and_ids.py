"""Schema ids of the local registry, and the time-ordered event ids of `events.ids`."""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from events.catalog import Catalog
from events.ids import parse_uuid, uuid7
from events.registry import LocalSchemaRegistry, SchemaRegistryError
from tests.support import REPO

CATALOG = Catalog.load()
FILED = "cn.gov.liandong.case.filed.v1"
ALL_REVISIONS = [revision for kind in CATALOG for revision in kind.revisions]


def filed() -> dict[str, Any]:
    return copy.deepcopy(dict(CATALOG.get(FILED).latest))


def reversed_keys(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse order (field order kept)."""
    if isinstance(value, Mapping):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


# Schema ids


def test_schema_ids_are_the_same_from_two_registry_instances() -> None:
    first, second = LocalSchemaRegistry(), LocalSchemaRegistry()
    assert [first.id_for(s) for s in ALL_REVISIONS] == [second.id_for(s) for s in ALL_REVISIONS]


async def test_registering_a_schema_in_two_instances_returns_the_same_id() -> None:
    first, second = LocalSchemaRegistry(), LocalSchemaRegistry()
    assert await first.register(FILED, filed()) == await second.register(FILED, filed())


def test_schema_ids_are_the_same_in_another_process_with_another_hash_seed() -> None:
    script = (
        "from events.catalog import Catalog\n"
        "from events.registry import LocalSchemaRegistry\n"
        "print(LocalSchemaRegistry.id_for(Catalog.load().get('cn.gov.liandong.case.filed.v1').latest))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == LocalSchemaRegistry.id_for(filed())


def test_every_schema_id_is_a_positive_31_bit_integer() -> None:
    ids = [LocalSchemaRegistry.id_for(s) for s in ALL_REVISIONS]
    assert ids
    assert all(1 <= i <= 2**31 - 1 for i in ids), ids


def test_different_schemas_get_different_ids() -> None:
    with_field = filed()
    with_field["fields"].append(
        {"name": "district_note", "type": ["null", "string"], "default": None, "doc": "Note."}
    )
    renamed = filed()
    renamed["name"] = "CaseRegistered"

    ids = [LocalSchemaRegistry.id_for(s) for s in [*ALL_REVISIONS, with_field, renamed]]

    assert len(set(ids)) == len(ids)


def test_a_schema_with_its_json_keys_in_another_order_keeps_its_id() -> None:
    shuffled = reversed_keys(filed())
    assert list(shuffled) != list(filed())
    assert LocalSchemaRegistry.id_for(shuffled) == LocalSchemaRegistry.id_for(filed())


def test_a_doc_only_change_keeps_the_id_because_the_parsing_canonical_form_strips_doc() -> None:
    changed = filed()
    changed["doc"] = "A different description of the record."
    changed["fields"][0]["doc"] = "A different description of the field."
    assert changed != filed()
    assert LocalSchemaRegistry.id_for(changed) == LocalSchemaRegistry.id_for(filed())


def test_a_custom_attribute_change_keeps_the_id_because_the_canonical_form_strips_it() -> None:
    changed = filed()
    del changed["fields"][0]["liandong.ref"]
    assert LocalSchemaRegistry.id_for(changed) == LocalSchemaRegistry.id_for(filed())


def test_a_field_order_change_changes_the_id_because_avro_binary_depends_on_field_order() -> None:
    changed = filed()
    changed["fields"].reverse()
    assert LocalSchemaRegistry.id_for(changed) != LocalSchemaRegistry.id_for(filed())


async def test_a_registered_schema_is_found_by_its_id() -> None:
    registry = LocalSchemaRegistry()
    schema_id = await registry.register(FILED, filed())
    assert await registry.schema_by_id(schema_id) == filed()


async def test_looking_up_an_unknown_schema_id_raises_a_schema_registry_error_naming_it() -> None:
    registry = LocalSchemaRegistry()
    await registry.register(FILED, filed())
    unknown = LocalSchemaRegistry.id_for(filed()) ^ 1
    with pytest.raises(SchemaRegistryError, match=f"unknown schema id {unknown}"):
        await registry.schema_by_id(unknown)


async def test_two_different_schemas_that_collide_on_one_id_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = LocalSchemaRegistry()
    monkeypatch.setattr(LocalSchemaRegistry, "id_for", staticmethod(lambda schema: 42))
    await registry.register(FILED, filed())
    other = filed()
    other["name"] = "CaseRegistered"
    with pytest.raises(SchemaRegistryError, match="collision"):
        await registry.register(FILED, other)
    assert (await registry.schema_by_id(42))["name"] == "CaseFiled"


# Event ids


def test_uuid7_has_version_7_and_the_rfc_variant() -> None:
    for _ in range(100):
        value = uuid7()
        assert value.version == 7
        assert value.variant == uuid.RFC_4122


def test_uuid7_carries_the_given_unix_milliseconds_in_its_first_48_bits() -> None:
    now_ms = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z
    assert uuid7(now_ms=now_ms).int >> 80 == now_ms


def test_ids_generated_in_increasing_milliseconds_sort_in_that_order() -> None:
    start = 1_767_225_600_000
    ids = [uuid7(now_ms=start + step) for step in range(200)]
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)

    assert sorted(shuffled) == ids
    assert sorted(str(i) for i in shuffled) == [str(i) for i in ids]


def test_a_thousand_ids_in_the_same_millisecond_are_unique() -> None:
    ids = {uuid7(now_ms=1_767_225_600_000) for _ in range(1000)}
    assert len(ids) == 1000


CANONICAL = "0190f5a2-7c3e-7b1d-9a2f-3c4d5e6f7a8b"


@pytest.mark.parametrize("text", [CANONICAL, CANONICAL.upper()], ids=["lower", "upper"])
def test_parse_uuid_accepts_the_canonical_form_in_either_case(text: str) -> None:
    assert parse_uuid(text) == uuid.UUID(CANONICAL)


@pytest.mark.parametrize(
    "text",
    [
        "{" + CANONICAL + "}",
        "urn:uuid:" + CANONICAL,
        CANONICAL.replace("-", ""),
        CANONICAL[:-1],
        CANONICAL + "0",
        CANONICAL[:-1] + "g",
        CANONICAL.replace("-", "_"),
        " " + CANONICAL,
        CANONICAL + "\n",
        "",
    ],
    ids=[
        "braces",
        "urn-prefix",
        "no-hyphens",
        "too-short",
        "too-long",
        "non-hex",
        "underscores",
        "leading-space",
        "trailing-newline",
        "empty",
    ],
)
def test_parse_uuid_rejects_anything_but_the_canonical_form(text: str) -> None:
    assert parse_uuid(text) is None
