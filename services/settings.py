"""One validated, frozen settings object per process, read from LIANDONG_* variables."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url


class SettingsError(ValueError):
    pass


# Records per projector batch at most (LIANDONG_BATCH_MAX). Batches only grow under a backlog:
# live traffic is flushed every LIANDONG_BATCH_WITHIN_MS. Under a backlog, 10,000 projects about
# twice the events per second of 1,000 (docs/benchmarks.md, "Projection stage"): a subject's events
# fold into one row write, and its history is read once per batch instead of once per 1,000 events.
DEFAULT_BATCH_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    database_url: str
    kafka_bootstrap: str | None
    broker_port: int
    api_host: str
    api_port: int
    worker_web_port: int
    topic_partitions: int
    topic_replication: int
    consumer_group: str
    schema_registry_url: str | None
    batch_max: int
    batch_within_s: float
    broker_session_timeout_s: float
    log_level: str
    fault_exit_after_batches: int
    clock_scan_interval_s: float
    alert_grace_s: int
    reescalate_after_h: int
    time_source: str
    calendar_file: Path | None
    webhooks_file: Path | None
    outbox_dsn: str | None
    outbox_table: str
    relay_web_port: int
    import_max_bytes: int
    import_max_rows: int
    # Secrets: never in repr, so never in a log line that prints the settings. None: the hub
    # generates one and keeps it in hub_meta (embedded default; docs/security.md says why production
    # sets them).
    token_secret: bytes | None = field(default=None, repr=False)
    master_key: bytes | None = field(default=None, repr=False)
    rate_limit_per_min: int = 3000
    rate_limit_burst: int = 600
    pii_retention_days: int = 3650
    # Where the worker's /metrics listens: loopback by default; 0.0.0.0 in a container, so that
    # Prometheus in another container or pod can scrape it.
    worker_web_host: str = "127.0.0.1"
    # The outbox relay's /metrics, /healthz and /readyz (LIANDONG_CONNECTOR_METRICS_PORT is the
    # earlier name of the port, still read when the new one is not set).
    relay_web_host: str = "127.0.0.1"
    # How often the worker measures its gauges (clocks, consumer lag, dead-letter depth) and probes
    # its dependencies.
    metrics_interval_s: float = 10.0
    # LIANDONG_LOG_FORMAT: "json" (one object per line, docs/logging.md) or "text" for a terminal.
    log_format: str = "json"

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap is None

    def redacted_database_url(self) -> str:
        """The database URL without its password (userinfo or query), for logs and start-up output."""
        url = make_url(self.database_url)
        if "password" in url.query:
            url = url.update_query_dict({"password": "***"})
        return url.render_as_string(hide_password=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("LIANDONG_DATA_DIR", ".liandong")).expanduser().resolve()
        database_url = env.get("LIANDONG_DATABASE_URL") or f"sqlite+aiosqlite:///{data_dir / 'liandong.db'}"
        if not database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise SettingsError(
                "LIANDONG_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        log_level = env.get("LIANDONG_LOG_LEVEL", "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError("LIANDONG_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        log_format = env.get("LIANDONG_LOG_FORMAT", "json").lower()
        if log_format not in ("json", "text"):
            raise SettingsError("LIANDONG_LOG_FORMAT must be json or text")
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            kafka_bootstrap=env.get("LIANDONG_KAFKA_BOOTSTRAP") or None,
            broker_port=_int(env, "LIANDONG_BROKER_PORT", 0, 0, 65535),
            api_host=env.get("LIANDONG_API_HOST", "127.0.0.1"),
            api_port=_int(env, "LIANDONG_API_PORT", 8080, 0, 65535),
            worker_web_port=_int(env, "LIANDONG_WORKER_WEB_PORT", 6066, 1, 65535),
            topic_partitions=_int(env, "LIANDONG_TOPIC_PARTITIONS", 6, 1, 10_000),
            topic_replication=_int(env, "LIANDONG_TOPIC_REPLICATION", 1, 1, 16),
            consumer_group=env.get("LIANDONG_CONSUMER_GROUP", "liandong-projector"),
            schema_registry_url=env.get("LIANDONG_SCHEMA_REGISTRY_URL") or None,
            batch_max=_int(env, "LIANDONG_BATCH_MAX", DEFAULT_BATCH_MAX, 1, 100_000),
            batch_within_s=_int(env, "LIANDONG_BATCH_WITHIN_MS", 200, 1, 60_000) / 1000,
            broker_session_timeout_s=_int(env, "LIANDONG_BROKER_SESSION_TIMEOUT_S", 10, 6, 300),
            log_level=log_level,
            log_format=log_format,
            fault_exit_after_batches=_int(env, "LIANDONG_FAULT_EXIT_AFTER_BATCHES", 0, 0, 1_000_000),
            clock_scan_interval_s=_int(env, "LIANDONG_CLOCK_SCAN_INTERVAL_MS", 5000, 50, 3_600_000) / 1000,
            alert_grace_s=_int(env, "LIANDONG_ALERT_GRACE_S", 60, 0, 86_400),
            reescalate_after_h=_int(env, "LIANDONG_REESCALATE_AFTER_H", 48, 1, 24 * 90),
            time_source=_time_source(env.get("LIANDONG_TIME_SOURCE", "system")),
            calendar_file=_path(env, "LIANDONG_CALENDAR_FILE"),
            webhooks_file=_path(env, "LIANDONG_WEBHOOKS_FILE"),
            outbox_dsn=env.get("LIANDONG_OUTBOX_DSN") or None,
            outbox_table=env.get("LIANDONG_OUTBOX_TABLE", "liandong_outbox"),
            relay_web_port=_int(
                env,
                "LIANDONG_RELAY_WEB_PORT",
                _int(env, "LIANDONG_CONNECTOR_METRICS_PORT", 6067, 1, 65535),
                1,
                65535,
            ),
            import_max_bytes=_int(env, "LIANDONG_IMPORT_MAX_BYTES", 20 * 1024 * 1024, 1024, 2**31),
            import_max_rows=_int(env, "LIANDONG_IMPORT_MAX_ROWS", 100_000, 1, 10_000_000),
            token_secret=_secret(env, "LIANDONG_TOKEN_SECRET"),
            master_key=_secret(env, "LIANDONG_MASTER_KEY", exact=32),
            rate_limit_per_min=_int(env, "LIANDONG_RATE_LIMIT_PER_MIN", 3000, 1, 10_000_000),
            rate_limit_burst=_int(env, "LIANDONG_RATE_LIMIT_BURST", 600, 1, 10_000_000),
            pii_retention_days=_int(env, "LIANDONG_PII_RETENTION_DAYS", 3650, 1, 36_500),
            worker_web_host=env.get("LIANDONG_WORKER_WEB_HOST", "127.0.0.1"),
            relay_web_host=env.get("LIANDONG_RELAY_WEB_HOST", "127.0.0.1"),
            metrics_interval_s=_int(env, "LIANDONG_METRICS_INTERVAL_MS", 10_000, 100, 3_600_000) / 1000,
        )


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _time_source(value: str) -> str:
    if value != "system" and not value.startswith("file:"):
        raise SettingsError("LIANDONG_TIME_SOURCE must be 'system' or 'file:PATH' (tests only)")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw).expanduser().resolve() if raw else None


def _secret(env: Mapping[str, str], name: str, exact: int | None = None) -> bytes | None:
    """A base64 secret of 32 bytes or more (`exact`: exactly that many). The message never echoes it."""
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(f"{name} must be base64 (e.g. `openssl rand -base64 32`)") from None
    if exact is not None and len(value) != exact:
        raise SettingsError(f"{name} must decode to exactly {exact} bytes, got {len(value)}")
    if len(value) < 32:
        raise SettingsError(f"{name} must decode to at least 32 bytes, got {len(value)}")
    return value
