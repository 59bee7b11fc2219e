"""Kafka plumbing shared by every edge: the acknowledged publisher, topics, broker incarnation."""
