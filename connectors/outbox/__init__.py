"""The database outbox connector: an agency's own PostgreSQL outbox table, relayed as catalog events."""

from connectors.outbox.relay import CHECKPOINT_TABLE, OutboxRelay, OutboxRow

__all__ = ["CHECKPOINT_TABLE", "OutboxRelay", "OutboxRow"]
