"""Outbound webhooks: signed deliveries of alert payloads to receivers' HTTPS endpoints (docs/webhooks.md)."""
