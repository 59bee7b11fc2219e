"""What a structured, redacted log line costs against the plain text line it replaced.

    .venv/bin/python -m bench.log_cost                 # ~10 s
    .venv/bin/python -m bench.log_cost --lines 50000 --runs 7

Formats the same records with the standard library's text formatter (the format the hub used before
issue 9: the baseline), with services/logs.py's JsonFormatter (correlation fields, redaction of keys,
tokens, DSN passwords, configured secrets and personal data on every field), and with its
TextFormatter (the same redaction, as text). Three kinds of line: a dead letter with its correlation
fields, an access-log line with a query string, and a line carrying an ID number and a DSN. Nothing is
written: only `format()` is timed, in one process, runs interleaved so that the machine's noise falls
on all three alike. Prints a Markdown table: median microseconds per line and the ratio to the
baseline.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

from services import logs

SECRET = b"0123456789abcdef0123456789abcdef"
DSN = "postgresql+asyncpg://liandong:s3cretpassw0rd@db:5432/liandong"


def _records() -> list[logging.LogRecord]:
    def record(msg: str, args: tuple[object, ...], **extra: object) -> logging.LogRecord:
        r = logging.LogRecord("projections.runtime", logging.WARNING, __file__, 1, msg, args, None)
        r.__dict__.update(extra)
        return r

    return [
        record(
            "dead-lettered %s: %s",
            ("case.filed.v1", "ungranted_township"),
            event_id="0b9d1c8e-4e7a-4f0c-9a51-3f8f2b6d7c10",
            subject="case/PY-2022-000123",
            unit="PY-SQ-ZF",
        ),
        record(
            '%s - "%s %s HTTP/1.1" %d',
            ("127.0.0.1:51234", "GET", "/v1/cases?township=shiqiao&key=ld_0123456789ab_secretsecret", 200),
        ),
        record("store %s refused party 44011319800101123X, phone 13812345678", (DSN,)),
    ]


def _time(fmt: Callable[[logging.LogRecord], str], records: list[logging.LogRecord], lines: int) -> float:
    start = time.perf_counter()
    for i in range(lines):
        fmt(records[i % len(records)])
    return (time.perf_counter() - start) / lines * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logs.register_secret(SECRET)
    logs.register_dsn(DSN)
    records = _records()
    variants: dict[str, Callable[[logging.LogRecord], str]] = {
        "text, stdlib (baseline)": logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
        ).format,
        "JSON, redacted (default)": logs.JsonFormatter("worker").format,
        "text, redacted (LIANDONG_LOG_FORMAT=text)": logs.TextFormatter("worker").format,
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, fmt in variants.items():
            samples[name].append(_time(fmt, records, args.lines))
    base = statistics.median(samples["text, stdlib (baseline)"])
    print(f"{args.lines:,} lines × {args.runs} runs, median µs per line\n")
    print("| formatter | µs per line | ratio |")
    print("|---|---:|---:|")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {median / base:.1f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
