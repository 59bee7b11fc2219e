"""Create the hub's topics when they are missing (the embedded broker starts empty)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import suppress

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAlreadyExistsError


async def ensure_topics(
    bootstrap: str,
    partitions: Mapping[str, int],
    replication: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="liandong-admin")
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=name,
                num_partitions=count,
                replication_factor=replication,
                topic_configs=dict((configs or {}).get(name, {})),
            )
            for name, count in partitions.items()
            if name not in existing
        ]
        if wanted:
            # Another process may have created them since we listed.
            with suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()


async def partition_counts(bootstrap: str, topics: Iterable[str]) -> dict[str, int]:
    """Each topic's partition count as the broker reports it (a missing topic is left out)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, client_id="liandong-admin")
    try:
        await client.bootstrap()
        cluster = await client.fetch_all_metadata()
        counts = {t: cluster.partitions_for_topic(t) for t in topics}
        return {t: len(p) for t, p in counts.items() if p}
    finally:
        await client.close()


def partition_mismatches(wanted: Mapping[str, int], actual: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Topics whose partition count differs from the setting, as (setting, actual)."""
    return {t: (n, actual[t]) for t, n in wanted.items() if t in actual and actual[t] != n}
