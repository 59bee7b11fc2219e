"""docs/events.md is generated from the schemas and must not go stale."""

from __future__ import annotations

from events.catalog import Catalog
from events.catalog_docs import render
from events.mechanisms import Mechanisms
from tests.support import REPO


def test_the_committed_catalog_document_matches_the_schemas() -> None:
    expected = render(Catalog.load(), Mechanisms.load())
    committed = (REPO / "docs" / "events.md").read_text(encoding="utf-8")
    assert committed == expected, (
        "docs/events.md is stale: run `liandong catalog docs --write docs/events.md`"
    )


def test_every_event_type_has_a_section_in_the_catalog_document() -> None:
    text = render(Catalog.load(), Mechanisms.load())
    missing = [k.type for k in Catalog.load() if f"### `{k.type}`" not in text]
    assert missing == []


def test_every_catalog_area_has_a_lifecycle_and_every_lifecycle_step_a_schema() -> None:
    catalog, mechanisms = Catalog.load(), Mechanisms.load()
    no_step = [k.type for k in catalog if mechanisms.step(k.type) is None]
    no_schema = [
        f"{area}.{event}"
        for area, info in mechanisms.areas.items()
        for event in info.steps
        if not any(k.short_type.startswith(f"{area}.{event}.v") for k in catalog)
    ]
    assert (no_step, no_schema) == ([], [])
