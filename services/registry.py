"""Choose the schema registry: Confluent REST when configured, the local one otherwise."""

from __future__ import annotations

from events.registry import ConfluentSchemaRegistry, LocalSchemaRegistry, SchemaRegistry
from services.settings import Settings


def make_registry(settings: Settings) -> SchemaRegistry:
    if settings.schema_registry_url:
        return ConfluentSchemaRegistry(settings.schema_registry_url)
    return LocalSchemaRegistry()
