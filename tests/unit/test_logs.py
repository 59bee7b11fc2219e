"""services/logs.py: the JSON line, the correlation fields, and what redaction takes out."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from events.directory import Directory
from services import logs
from services.settings import Settings, SettingsError
from services.tokens import issue_token
from tests.support import REPO

KEY = "ld_0123456789ab_Zx9-Qm_4rT2vW8yK1pLs3nB6cD0eF5gH7jJ9kM2oN4q"
KEY_SECRET = KEY.rsplit("_", 1)[1]
ID_NUMBER = "44011319900101123X"
PHONE = "13912345678"
EVENT_ID = "01a227d2-8c59-73df-b1b8-a13812345678"  # its last group holds a phone-shaped run


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def docs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]

    def last(self) -> dict[str, Any]:
        return self.docs()[-1]


def _capture(formatter: logging.Formatter) -> Iterator[tuple[logging.Logger, Captured]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield logger, Captured(stream)
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, Captured]]:
    yield from _capture(logs.JsonFormatter(process="worker"))


@pytest.fixture
def text_log() -> Iterator[tuple[logging.Logger, Captured]]:
    yield from _capture(logs.TextFormatter(process="api"))


# --- the line ------------------------------------------------------------------------------------


def test_a_record_is_one_json_line_with_the_contract_fields(
    json_log: tuple[logging.Logger, Captured],
) -> None:
    log, out = json_log
    log.warning("两条\nlines: %d", 2)
    (line,) = out.lines()
    doc = json.loads(line)
    assert set(doc) == {"ts", "level", "logger", "msg", "process", "pid"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])
    assert (doc["level"], doc["logger"], doc["process"]) == ("WARNING", log.name, "worker")
    assert doc["msg"] == "两条\nlines: 2"
    assert isinstance(doc["pid"], int)
    assert "两条" in line, "Chinese must stay readable, not \\u-escaped"


def test_the_correlation_comes_from_the_context_and_leaves_with_it(
    json_log: tuple[logging.Logger, Captured],
) -> None:
    log, out = json_log
    with logs.log_context(event_id=EVENT_ID, subject="C-1", unit="shilou.enforcement-office"):
        log.info("inside")
        with logs.log_context(subject="C-2", unit=None):
            log.info("nested")
    log.info("outside")
    inside, nested, outside = out.docs()
    assert (inside["event_id"], inside["subject"], inside["unit"]) == (
        EVENT_ID,
        "C-1",
        "shilou.enforcement-office",
    )
    assert (nested["subject"], nested["unit"]) == ("C-2", "shilou.enforcement-office")
    assert not {"event_id", "subject", "unit"} & set(outside)


def test_extra_fields_override_the_context(json_log: tuple[logging.Logger, Captured]) -> None:
    log, out = json_log
    with logs.log_context(unit="a.unit", subject="S-1"):
        log.info("x", extra={"unit": "b.unit", "attempt": 3, "topics": ["t1", "t2"]})
    doc = out.last()
    assert (doc["unit"], doc["subject"], doc["attempt"], doc["topics"]) == ("b.unit", "S-1", 3, ["t1", "t2"])


async def test_concurrent_tasks_keep_their_own_correlation(json_log: tuple[logging.Logger, Captured]) -> None:
    log, out = json_log
    both = asyncio.Event()
    arrived = 0

    async def handle(event_id: str) -> None:
        nonlocal arrived
        with logs.log_context(event_id=event_id):
            arrived += 1
            if arrived == 2:
                both.set()
            await both.wait()  # both contexts are open at once
            log.info("handled %s", event_id)

    first, second = "01a227d2-0000-7000-8000-000000000001", "01a227d2-0000-7000-8000-000000000002"
    await asyncio.gather(handle(first), handle(second))
    assert {d["msg"][-36:]: d["event_id"] for d in out.docs()} == {first: first, second: second}


def test_an_event_id_is_never_mangled_by_the_phone_mask(json_log: tuple[logging.Logger, Captured]) -> None:
    log, out = json_log
    log.info("event %s and phone %s", EVENT_ID, PHONE, extra={"event_id": EVENT_ID})
    doc = out.last()
    assert doc["event_id"] == EVENT_ID
    assert doc["msg"] == f"event {EVENT_ID} and phone 139****5678"


def test_an_exception_goes_to_exc_redacted(json_log: tuple[logging.Logger, Captured]) -> None:
    log, out = json_log
    try:
        raise ConnectionError(f"cannot reach postgresql+asyncpg://hub:S3cret-pw@db/liandong with {KEY}")
    except ConnectionError:
        log.exception("store unreachable")
    doc = out.last()
    assert doc["msg"] == "store unreachable"
    assert "Traceback" in doc["exc"]
    assert "ConnectionError" in doc["exc"]
    assert "S3cret-pw" not in out.stream.getvalue()
    assert KEY_SECRET not in out.stream.getvalue()
    assert "postgresql+asyncpg://hub:***@db/liandong" in doc["exc"]


# --- redaction -----------------------------------------------------------------------------------


def test_an_api_key_keeps_its_id_and_loses_its_secret() -> None:
    assert logs.redact(f"Authorization: {KEY}") == "Authorization: ld_0123456789ab_***"


def test_a_signed_token_and_a_bearer_credential_are_masked() -> None:
    token, _ = issue_token(
        bytes(32), Directory.load(), unit="shilou.enforcement-office", role="township_office", person="p"
    )
    text = logs.redact(f"token {token} then Authorization: Bearer opaque-credential-42")
    assert token.split(".")[2] not in text
    assert token.split(".")[1] not in text
    assert "opaque-credential-42" not in text
    assert text == "token *** then Authorization: Bearer ***"


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        (
            "postgresql+asyncpg://hub:pa55word@db:5432/liandong",
            "postgresql+asyncpg://hub:***@db:5432/liandong",
        ),
        ("postgresql://u:p%40ss@10.0.0.2/x?sslmode=require", "postgresql://u:***@10.0.0.2/x?sslmode=require"),
        ("postgresql://db/x?user=hub&password=pa55word", "postgresql://db/x?user=hub&password=***"),
        ("postgresql://hub@db/liandong", "postgresql://hub@db/liandong"),
        ("kafka-1:9092", "kafka-1:9092"),
    ],
)
def test_a_dsn_password_is_masked(dsn: str, masked: str) -> None:
    assert logs.redact(f"connecting to {dsn}") == f"connecting to {masked}"


def test_secrets_in_a_query_string_or_a_mapping_are_masked() -> None:
    line = '127.0.0.1:5 - "GET /v1/cases?key=abc&token=def&page=2&api_key=ghi HTTP/1.1" 401'
    assert (
        logs.redact(line) == '127.0.0.1:5 - "GET /v1/cases?key=***&token=***&page=2&api_key=*** HTTP/1.1" 401'
    )
    assert logs.redact("{'password': 'hunter22', 'user': 'hub'}") == "{'password': '***', 'user': 'hub'}"


def test_a_key_id_stays_readable_for_correlation() -> None:
    assert logs.redact("auth refused reason=revoked who=key=0123456789ab") == (
        "auth refused reason=revoked who=key=0123456789ab"
    )


def test_a_registered_secret_is_masked_in_each_of_its_spellings() -> None:
    master = bytes(range(200, 232))
    logs.register_secret(master)
    for spelling in (
        base64.b64encode(master).decode(),
        base64.urlsafe_b64encode(master).decode().rstrip("="),
        master.hex(),
    ):
        assert spelling not in logs.redact(f"value {spelling} end")


def test_the_configured_dsn_password_is_masked_even_outside_the_url() -> None:
    logs.register_dsn("postgresql+asyncpg://hub:Unusual-Pw-8812@db/liandong")
    assert logs.redact("auth failed for password Unusual-Pw-8812") == "auth failed for password ***"


def test_a_short_password_is_not_masked_wherever_it_appears() -> None:
    # "test" would mask ordinary words; inside a DSN it is still masked (above).
    logs.register_dsn("postgresql+asyncpg://hub:test@db/liandong")
    assert logs.redact("the test passed") == "the test passed"


def test_personal_data_in_a_message_and_in_extra_fields_is_masked(
    json_log: tuple[logging.Logger, Captured],
) -> None:
    log, out = json_log
    log.warning(
        "party %s phone %s",
        ID_NUMBER,
        PHONE,
        extra={"subject": f"投诉-{PHONE}", "party": {"id_number": ID_NUMBER, "phones": [PHONE]}},
    )
    raw = out.stream.getvalue()
    assert ID_NUMBER not in raw
    assert PHONE not in raw
    doc = out.last()
    assert doc["msg"] == "party 440113********123X phone 139****5678"
    assert doc["subject"] == "投诉-139****5678"
    assert doc["party"] == {"id_number": "440113********123X", "phones": ["139****5678"]}


def test_a_phone_inside_a_bytes_repr_is_masked() -> None:
    payload = repr(b"\x02\x16" + PHONE.encode() + b"\x00")
    assert PHONE not in logs.redact(f"Sending value={payload}")


def test_sql_parameters_and_key_details_are_dropped() -> None:
    text = (
        "(asyncpg.exceptions.UniqueViolationError) duplicate key\n"
        "DETAIL:  Key (party_ref)=(欧阳明轩) already exists.\n"
        "[SQL: INSERT INTO parties VALUES ($1, $2)]\n"
        "[parameters: ('欧阳明轩', '广州市番禺区石楼镇')]"
    )
    masked = logs.redact(text)
    assert "欧阳明轩" not in masked
    assert "石楼镇" not in masked
    assert "Key (party_ref)=(***)" in masked
    assert "[parameters: ***]" in masked
    assert "[SQL: INSERT INTO parties VALUES ($1, $2)]" in masked


# --- the text format, the configuration ------------------------------------------------------------


def test_the_text_format_carries_the_same_fields_and_redaction(
    text_log: tuple[logging.Logger, Captured],
) -> None:
    log, out = text_log
    with logs.log_context(event_id=EVENT_ID, unit="shilou.enforcement-office"):
        log.error("refused %s", KEY)
    (line,) = out.lines()
    assert line.endswith(f"refused ld_0123456789ab_*** event_id={EVENT_ID} unit=shilou.enforcement-office")
    assert f" ERROR {log.name} [api " in line


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log format"):
        logs.dict_config("api", "INFO", "xml")


def test_at_debug_the_loggers_that_print_records_or_sql_parameters_stay_above_it() -> None:
    config = logs.dict_config("api", "DEBUG", "json")
    assert config["loggers"]["aiokafka"]["level"] == "INFO"
    assert config["loggers"]["aiosqlite"]["level"] == "INFO"
    assert config["loggers"]["sqlalchemy"]["level"] == "WARNING"
    assert config["root"]["level"] == "DEBUG"
    assert config["loggers"]["alembic"]["level"] == "WARNING"
    assert config["loggers"]["uvicorn.access"] == {"handlers": [], "propagate": True, "level": "DEBUG"}


def test_the_log_format_setting() -> None:
    assert Settings.from_env({}).log_format == "json"
    assert Settings.from_env({"LIANDONG_LOG_FORMAT": "TEXT"}).log_format == "text"
    with pytest.raises(SettingsError, match="LIANDONG_LOG_FORMAT must be json or text"):
        Settings.from_env({"LIANDONG_LOG_FORMAT": "yaml"})


def test_a_configured_process_writes_warnings_and_uncaught_exceptions_as_json_lines() -> None:
    script = (
        "import logging, warnings\n"
        "from services import logs\n"
        "logs.configure('relay', 'INFO', 'json')\n"
        "logging.getLogger('aiokafka').debug('must not appear')\n"
        "warnings.warn('old option')\n"
        f"raise RuntimeError('cannot publish with {KEY}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 1
    assert done.stdout == ""
    docs = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(d["logger"], d["level"], d["process"]) for d in docs] == [
        ("py.warnings", "WARNING", "relay"),
        ("liandong.uncaught", "CRITICAL", "relay"),
    ]
    assert "RuntimeError: cannot publish with ld_0123456789ab_***" in docs[1]["exc"]
    assert KEY_SECRET not in done.stderr
