"""Create the hub's topics when they are missing (the embedded broker starts empty)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
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
