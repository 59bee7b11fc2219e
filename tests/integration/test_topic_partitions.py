"""The partition count is a setting that sizes topics only when they are created: an existing topic
keeps its count, and the worker says so instead of leaving added workers idle without a word."""

from __future__ import annotations

import uuid

from connectors.kafka.topics import ensure_topics, partition_counts, partition_mismatches


async def test_an_existing_topic_keeps_its_count_and_the_difference_is_reported(broker: str) -> None:
    old, new = f"t.{uuid.uuid4().hex[:8]}.events", f"t.{uuid.uuid4().hex[:8]}.events"
    await ensure_topics(broker, {old: 2})
    # Raised later, for both: the new topic gets it, the existing one does not.
    await ensure_topics(broker, {old: 3, new: 3})

    counts = await partition_counts(broker, [old, new, "t.never-created"])

    assert counts == {old: 2, new: 3}
    assert partition_mismatches({old: 3, new: 3}, counts) == {old: (3, 2)}
