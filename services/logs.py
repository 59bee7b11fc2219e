"""Structured logs: one JSON object per line on stderr, with correlation fields, never a secret.

Every process (`liandong api`, `worker`, `outbox-relay`, `up`'s children, the one-shot commands)
configures the root logger once through `configure`; uvicorn gets the same configuration as its
`log_config` and faust is told not to configure logging at all, so the libraries' records (uvicorn,
faust, mode, aiokafka, SQLAlchemy, alembic) go through the same formatter as ours.

- Fields: `ts` (ISO 8601, UTC), `level`, `logger`, `msg`, `process` (the role: api, worker,
  relay, …), `pid`; `event_id`, `subject` and `unit` when known; `exc` for a traceback; any other
  `extra={...}` field under its own name.
- Correlation: `log_context(event_id=..., subject=..., unit=...)` sets the fields for every line
  logged inside it (a contextvar, so concurrent requests and tasks do not mix them up). Code in
  `projections/` and `connectors/`, which may not import `services`, passes `extra={...}` instead.
- Redaction runs in the formatter, on the final text of every field (message, extras, traceback):
  the last place a line passes before it leaves the process, whoever logged it. See `redact`.

docs/logging.md has the field list, the redaction rules and how to read the lines with jq.
"""

from __future__ import annotations

import base64
import json
import logging
import logging.config
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy.engine import make_url

from events.masking import mask_text

CORRELATION = ("event_id", "subject", "unit")
FORMATS = ("json", "text")
MASK = "***"

# Pairs, not a dict: a context variable's default must be immutable (it is shared by every context).
_context: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("liandong_log_context", default=())
# A record's own attributes: everything else on it came from `extra={...}`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    # uvicorn's copy of the message with terminal colour codes.
    "color_message",
}


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Every line logged inside carries these fields (None leaves a field as it was)."""
    merged = {**dict(_context.get()), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _context.set(tuple(merged.items()))
    try:
        yield
    finally:
        _context.reset(token)


# --- redaction ---------------------------------------------------------------------------------------

# Literal secrets of this process (the configured master key and token secret, passwords in the
# configured DSNs), in each spelling they could be printed in.
_secrets: set[str] = set()
# Only secrets this long are replaced wherever they appear: a short password ("test") would mask
# ordinary words; it is still masked inside a DSN and after `password=`.
_MIN_LITERAL = 8

# scheme://user:password@host: the password, whatever the scheme (postgresql+asyncpg, kafka, redis…).
_DSN_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s:/@]*:)([^\s@/]+)(@)")
# An API key reads ld_<12 hex key id>_<secret> (services/keys.py): the key id stays, for correlation.
_API_KEY = re.compile(r"\b(ld_[0-9a-f]{12}_)[A-Za-z0-9_\-]+")
# A signed token (services/tokens.py) is a JWT: its header is base64url JSON, so it starts "eyJ".
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*")
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?!\*\*\*)[^\s\"',;]+")
# name=value and "name": "value" for names that hold secrets: query strings (uvicorn's access log
# prints the full path), form bodies, reprs of settings or configs.
_SECRET_NAMES = (
    r"api[_-]?key|key|token|access[_-]?token|refresh[_-]?token|password|passwd|pwd|secret|"
    r"client[_-]?secret|login|session|sig|signature|authorization"
)
# A key id (12 hex, `who=key=…` in the auth log) is not a secret: it is how a refusal is traced.
_ASSIGNED = re.compile(rf"(?i)(?<![\w-])((?:{_SECRET_NAMES})=)(?![0-9a-f]{{12}}(?![\w-]))([^&\s\"',;]+)")
_QUOTED = re.compile(rf"(?i)([\"'](?:{_SECRET_NAMES})[\"']\s*:\s*[\"'])([^\"']+)")
# SQLAlchemy renders a failed statement's parameters (a party's name, an ID number) into its
# message; PostgreSQL quotes the values of a violated key in DETAIL.
_SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*")
_KEY_DETAIL = re.compile(r"(Key \([^)\n]*\)=\()[^\n]*")
# Event ids are UUIDs: their hex digits must not be mistaken for a phone number by the PII masks.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Kept whole, and a boundary for the PII masks: UUIDs, and the escapes of a bytes repr, whose hex
# digits would otherwise glue onto a number that follows (b'\x1613912345678': a length, then a phone).
_OPAQUE = re.compile(rf"({_UUID.pattern}|\\x[0-9a-fA-F]{{2}})")


def register_secret(value: str | bytes | None) -> None:
    """Never print this value: a string as it is, bytes in each encoding a secret is shown in."""
    if not value:
        return
    if isinstance(value, bytes):
        spellings = {
            base64.b64encode(value).decode(),
            base64.urlsafe_b64encode(value).decode(),
            base64.urlsafe_b64encode(value).decode().rstrip("="),
            value.hex(),
        }
    else:
        spellings = {value}
    _secrets.update(s for s in spellings if len(s) >= _MIN_LITERAL)


def register_dsn(url: str | None) -> None:
    """Never print the password of this connection URL, even outside a URL."""
    if not url:
        return
    try:
        parsed = make_url(url)
    except Exception:  # not a SQLAlchemy URL: the DSN pattern still masks it in place
        return
    register_secret(parsed.password if isinstance(parsed.password, str) else None)
    query_password = parsed.query.get("password")
    register_secret(query_password if isinstance(query_password, str) else None)


def redact(text: str) -> str:
    """The text without secrets (keys, tokens, passwords) and with personal data masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _DSN_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)
    text = _API_KEY.sub(rf"\g<1>{MASK}", text)
    text = _JWT.sub(MASK, text)
    text = _BEARER.sub(rf"\g<1>{MASK}", text)
    text = _ASSIGNED.sub(rf"\g<1>{MASK}", text)
    text = _QUOTED.sub(rf"\g<1>{MASK}", text)
    text = _SQL_PARAMETERS.sub(f"[parameters: {MASK}]", text)
    text = _KEY_DETAIL.sub(rf"\g<1>{MASK})", text)
    return _mask_personal(text)


def _mask_personal(text: str) -> str:
    """ID numbers and mobile numbers masked (events/masking.py), UUIDs left whole."""
    pieces = _OPAQUE.split(text)
    # split() with one group: the odd pieces are the UUIDs and escapes.
    return "".join(p if i % 2 else (mask_text(p) or p) for i, p in enumerate(pieces))


def _clean(value: Any, depth: int = 0) -> Any:
    """An extra field's value as JSON, its strings redacted."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < 4 and isinstance(value, Mapping):
        return {redact(str(k)): _clean(v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    return redact(value if isinstance(value, str) else str(value))


# --- formatters ----------------------------------------------------------------------------------


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """Correlation from the context, overridden by the record's own `extra`, then other extras."""
    fields: dict[str, Any] = dict(_context.get())
    for name, value in record.__dict__.items():
        if name not in _STANDARD and not name.startswith("_"):
            fields[name] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; Chinese stays readable (no \\u escapes)."""

    def __init__(self, process: str = "liandong") -> None:
        super().__init__()
        self.role = process

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
            "process": self.role,
            "pid": record.process,
        }
        fields = _fields(record)
        for name in CORRELATION:
            if fields.get(name) is not None:
                doc[name] = _correlation(name, fields.pop(name))
        for name, value in fields.items():
            if name not in doc:
                doc[name] = _clean(value)
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            doc["exc"] = redact(record.exc_text)
        if record.stack_info:
            doc["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """A line for a terminal (LIANDONG_LOG_FORMAT=text): the same fields, the same redaction."""

    def __init__(self, process: str = "liandong") -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(process)d]")
        self.role = process

    def format(self, record: logging.LogRecord) -> str:
        head = f"{self.formatTime(record)} {record.levelname} {record.name} [{self.role} {record.process}]"
        fields = _fields(record)
        tags = "".join(
            f" {name}={_correlation(name, fields[name])}"
            for name in CORRELATION
            if fields.get(name) is not None
        )
        line = f"{head} {redact(record.getMessage())}{tags}"
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line += "\n" + redact(record.exc_text)
        return line


def _correlation(name: str, value: Any) -> str:
    text = str(value)
    # An event id is a UUID the envelope validated: nothing to mask, and masking could corrupt it.
    return text if name == "event_id" and _UUID.fullmatch(text) else redact(text)


# --- configuration -------------------------------------------------------------------------------


def dict_config(process: str, level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    """The `logging.config.dictConfig` of a process: also handed to uvicorn as its `log_config`,
    so that uvicorn's loggers propagate to our handler instead of installing their own."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}")
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    quiet = _at_least(logging.WARNING, level)
    library = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"liandong": {"()": formatter, "process": process}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "liandong",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "uvicorn": {**library, "level": level},
            "uvicorn.error": {**library, "level": level},
            "uvicorn.access": {**library, "level": level},
            # Alembic narrates every plugin it loads at INFO; operators only need its warnings.
            "alembic": {**library, "level": quiet},
            # At DEBUG aiokafka prints every record it sends or fetches: events with personal data,
            # in a bytes repr no mask can read (a name is escaped UTF-8). Never below INFO.
            "aiokafka": {**library, "level": _at_least(logging.INFO, level)},
            # Likewise the SQL drivers' statement logs, which carry the parameters: aiosqlite at
            # DEBUG, SQLAlchemy's engine at INFO (it holds itself at WARNING until configured).
            "aiosqlite": {**library, "level": _at_least(logging.INFO, level)},
            "sqlalchemy": {**library, "level": _at_least(logging.WARNING, level)},
        },
    }


def _at_least(floor: int, level: str) -> str:
    number = logging.getLevelNamesMapping()[level]
    return logging.getLevelName(max(floor, number))


def configure(
    process: str,
    level: str = "INFO",
    fmt: str = "json",
    secrets: tuple[bytes | None, ...] = (),
    dsns: tuple[str | None, ...] = (),
) -> None:
    """Send every record of this process through our formatter on stderr, including warnings and
    uncaught exceptions, which would otherwise print plain text."""
    for secret in secrets:
        register_secret(secret)
    for dsn in dsns:
        register_dsn(dsn)
    logging.config.dictConfig(dict_config(process, level, fmt))
    logging.captureWarnings(True)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread


def _uncaught(kind: type[BaseException], exc: BaseException, trace: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, trace)
        return
    logging.getLogger("liandong.uncaught").critical(
        "uncaught exception: %s", kind.__name__, exc_info=(kind, exc, trace)
    )


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    logging.getLogger("liandong.uncaught").critical(
        "uncaught exception in thread %s: %s",
        args.thread.name if args.thread else "?",
        args.exc_type.__name__,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
