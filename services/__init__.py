"""Processes of the hub: the stream worker, the HTTP API, the CLI, settings and wiring."""
