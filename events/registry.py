"""Schema registry clients: a local one for the embedded default and tests, Confluent REST for production.

Both hand out the 4-byte schema ids that the Confluent wire format carries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol

import httpx
from fastavro.schema import to_parsing_canonical_form


class SchemaRegistryError(RuntimeError):
    pass


class SchemaRegistry(Protocol):
    async def register(self, subject: str, schema: Mapping[str, Any]) -> int: ...

    async def schema_by_id(self, schema_id: int) -> Mapping[str, Any]: ...


def canonical_form(schema: Mapping[str, Any]) -> str:
    return str(to_parsing_canonical_form(dict(schema)))


class LocalSchemaRegistry:
    """An in-process registry whose ids are derived from each schema's canonical form.

    Deriving the id (instead of counting) lets the API and every worker agree on ids without
    sharing storage, and keeps ids stable across restarts of the embedded hub.
    """

    def __init__(self) -> None:
        self._by_id: dict[int, Mapping[str, Any]] = {}
        self._canonical_by_id: dict[int, str] = {}

    @staticmethod
    def id_for(schema: Mapping[str, Any]) -> int:
        digest = hashlib.sha256(canonical_form(schema).encode()).digest()
        # Positive 31-bit ids: some Confluent clients read the id as a signed int.
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF or 1

    async def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        schema_id = self.id_for(schema)
        canonical = canonical_form(schema)
        existing = self._canonical_by_id.get(schema_id)
        if existing is not None and existing != canonical:
            raise SchemaRegistryError(f"schema id collision for subject {subject}: {schema_id}")
        self._by_id[schema_id] = schema
        self._canonical_by_id[schema_id] = canonical
        return schema_id

    async def schema_by_id(self, schema_id: int) -> Mapping[str, Any]:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise SchemaRegistryError(f"unknown schema id {schema_id}") from None


class ConfluentSchemaRegistry:
    """Client for a Confluent-compatible REST registry (Confluent, Karapace, Apicurio's ccompat API)."""

    _CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            headers={"Content-Type": self._CONTENT_TYPE, "Accept": self._CONTENT_TYPE},
        )

    async def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        body = {"schema": json.dumps(schema, ensure_ascii=False)}
        response = await self._client.post(f"/subjects/{subject}/versions", json=body)
        if response.status_code != 200:
            raise SchemaRegistryError(
                f"registry refused {subject}: HTTP {response.status_code} {response.text[:200]}"
            )
        return int(response.json()["id"])

    async def schema_by_id(self, schema_id: int) -> Mapping[str, Any]:
        response = await self._client.get(f"/schemas/ids/{schema_id}")
        if response.status_code != 200:
            raise SchemaRegistryError(f"unknown schema id {schema_id}: HTTP {response.status_code}")
        loaded: Mapping[str, Any] = json.loads(response.json()["schema"])
        return loaded

    async def aclose(self) -> None:
        await self._client.aclose()
