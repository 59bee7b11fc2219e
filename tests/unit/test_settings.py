"""The settings object: defaults, validation of every LIANDONG_* integer, redaction, immutability.

Every test passes its environment explicitly to `Settings.from_env`; the process environment is
never read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.settings import Settings, SettingsError


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Relative defaults resolve against the working directory; make that a fresh one."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


# (variable, low, high, how to read the value back from Settings)
INTEGERS: list[tuple[str, int, int, Callable[[Settings], Any]]] = [
    ("LIANDONG_BROKER_PORT", 0, 65535, lambda s: s.broker_port),
    ("LIANDONG_API_PORT", 0, 65535, lambda s: s.api_port),
    ("LIANDONG_WORKER_WEB_PORT", 1, 65535, lambda s: s.worker_web_port),
    ("LIANDONG_TOPIC_PARTITIONS", 1, 10_000, lambda s: s.topic_partitions),
    ("LIANDONG_TOPIC_REPLICATION", 1, 16, lambda s: s.topic_replication),
    ("LIANDONG_BATCH_MAX", 1, 100_000, lambda s: s.batch_max),
    ("LIANDONG_BATCH_WITHIN_MS", 1, 60_000, lambda s: round(s.batch_within_s * 1000)),
    ("LIANDONG_BROKER_SESSION_TIMEOUT_S", 6, 300, lambda s: s.broker_session_timeout_s),
    ("LIANDONG_FAULT_EXIT_AFTER_BATCHES", 0, 1_000_000, lambda s: s.fault_exit_after_batches),
]
INTEGER_IDS = [name.removeprefix("LIANDONG_").lower() for name, *_ in INTEGERS]


def test_the_data_dir_defaults_to_dot_liandong_resolved_against_the_working_directory(
    in_tmp_dir: Path,
) -> None:
    data_dir = settings().data_dir
    assert data_dir == (in_tmp_dir / ".liandong").resolve()
    assert data_dir.is_absolute()


def test_the_database_defaults_to_sqlite_inside_the_data_dir(in_tmp_dir: Path) -> None:
    s = settings()
    assert s.database_url == f"sqlite+aiosqlite:///{(in_tmp_dir / '.liandong').resolve() / 'liandong.db'}"


def test_the_database_url_follows_a_custom_data_dir(in_tmp_dir: Path) -> None:
    s = settings(LIANDONG_DATA_DIR="state")
    assert s.data_dir == (in_tmp_dir / "state").resolve()
    assert s.database_url == f"sqlite+aiosqlite:///{s.data_dir / 'liandong.db'}"


def test_the_api_listens_on_localhost_8080_by_default() -> None:
    s = settings()
    assert (s.api_host, s.api_port) == ("127.0.0.1", 8080)


def test_the_workers_metrics_listen_on_loopback_unless_a_container_asks_for_every_address() -> None:
    assert settings().worker_web_host == "127.0.0.1"
    assert settings(LIANDONG_WORKER_WEB_HOST="0.0.0.0").worker_web_host == "0.0.0.0"


@pytest.mark.parametrize("env", [{}, {"LIANDONG_KAFKA_BOOTSTRAP": ""}], ids=["unset", "empty"])
def test_the_broker_is_embedded_when_no_bootstrap_is_given(env: dict[str, str]) -> None:
    s = Settings.from_env(env)
    assert s.kafka_bootstrap is None
    assert s.embedded_broker is True


def test_a_bootstrap_address_turns_the_embedded_broker_off() -> None:
    s = settings(LIANDONG_KAFKA_BOOTSTRAP="kafka-0:9092,kafka-1:9092")
    assert s.kafka_bootstrap == "kafka-0:9092,kafka-1:9092"
    assert s.embedded_broker is False


def test_an_explicit_mapping_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIANDONG_API_PORT", "9999")
    monkeypatch.setenv("LIANDONG_KAFKA_BOOTSTRAP", "kafka:9092")
    s = settings()
    assert s.api_port == 8080
    assert s.embedded_broker is True


@pytest.mark.parametrize(("name", "low", "high", "read"), INTEGERS, ids=INTEGER_IDS)
def test_each_integer_variable_accepts_its_bounds(
    name: str, low: int, high: int, read: Callable[[Settings], Any]
) -> None:
    assert read(settings(**{name: str(low)})) == low
    assert read(settings(**{name: str(high)})) == high


@pytest.mark.parametrize(("name", "low", "high", "read"), INTEGERS, ids=INTEGER_IDS)
@pytest.mark.parametrize("raw", ["abc", "1.5", "12x", "0x10", "1e3"])
def test_each_integer_variable_rejects_a_non_integer_naming_the_variable(
    name: str, low: int, high: int, read: Callable[[Settings], Any], raw: str
) -> None:
    with pytest.raises(SettingsError, match=f"{name} must be an integer"):
        settings(**{name: raw})


@pytest.mark.parametrize(("name", "low", "high", "read"), INTEGERS, ids=INTEGER_IDS)
def test_each_integer_variable_rejects_values_outside_its_range_naming_the_variable(
    name: str, low: int, high: int, read: Callable[[Settings], Any]
) -> None:
    for outside in (low - 1, high + 1):
        with pytest.raises(SettingsError, match=f"{name} must be between {low} and {high}"):
            settings(**{name: str(outside)})


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user@host/db",
        "postgresql+psycopg://user@host/db",
        "sqlite:///liandong.db",
        "mysql+aiomysql://user@host/db",
        "host/db",
    ],
)
def test_an_unsupported_database_url_scheme_is_rejected(url: str) -> None:
    with pytest.raises(SettingsError, match="LIANDONG_DATABASE_URL"):
        settings(LIANDONG_DATABASE_URL=url)


@pytest.mark.parametrize("url", ["postgresql+asyncpg://user@host:5432/db", "sqlite+aiosqlite:///tmp/x.db"])
def test_a_supported_database_url_is_kept(url: str) -> None:
    assert settings(LIANDONG_DATABASE_URL=url).database_url == url


def test_an_unknown_log_level_is_rejected_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="LIANDONG_LOG_LEVEL"):
        settings(LIANDONG_LOG_LEVEL="verbose")


def test_the_redacted_database_url_hides_the_password() -> None:
    s = settings(LIANDONG_DATABASE_URL="postgresql+asyncpg://user:secret@host/db")
    redacted = s.redacted_database_url()
    assert "secret" not in redacted
    assert redacted == "postgresql+asyncpg://user:***@host/db"
    assert s.database_url == "postgresql+asyncpg://user:secret@host/db"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://user@host:5432/db",
        "postgresql+asyncpg://host:5432/db",
        "sqlite+aiosqlite:///var/lib/liandong/liandong.db",
    ],
)
def test_the_redacted_database_url_leaves_a_url_without_password_unchanged(url: str) -> None:
    assert settings(LIANDONG_DATABASE_URL=url).redacted_database_url() == url


def test_the_redacted_database_url_hides_a_password_given_without_a_user_name() -> None:
    # SQLAlchemy reads "://:secret@host" as user "" with password "secret" (asyncpg then uses the OS user).
    s = settings(LIANDONG_DATABASE_URL="postgresql+asyncpg://:secret@host/db")
    assert "secret" not in s.redacted_database_url()


def test_the_settings_object_is_frozen() -> None:
    s = settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.api_port = 9090  # type: ignore[misc]
    assert s.api_port == 8080
