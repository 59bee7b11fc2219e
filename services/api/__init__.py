"""The HTTP API: the CloudEvents ingest gateway, the query API and the ops endpoints."""
