"""What the store and its readers can keep: text without control characters, identifiers no wider
than their columns.

An event the projections cannot write is worse than a refused one: once on the log, every batch it
is in fails, and the stream stops behind it. All three were found by the hostile-input tests
(docs/hostile-input.md): PostgreSQL's `text` cannot hold U+0000; a `case_id` of 200 characters
does not fit the `VARCHAR(128)` it is projected into; and a C0 control character (U+0007, U+001B,
...) is stored, but XML 1.0 cannot carry it, so one such case title made the public Atom feed
unreadable for every subscriber. Tab, line feed and carriage return are text, and stay allowed.

The gateway (and so the SDK and importer) refuses such events with a 422 naming the field; the
decoder refuses such records read from the broker, so that the worker dead-letters them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# C0 controls but TAB, LF and CR: what XML 1.0 cannot carry, NUL included (PostgreSQL cannot).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")

# Context attributes, as wide as the event history's columns.
MAX_ID = 64
MAX_SOURCE = 128
MAX_SUBJECT = 128

# Top-level data fields that the projections keep in bounded columns (projections/schema.py), at
# the narrowest width any of them is kept in. `kind` is 56: an anomaly's alert has the rule id
# `anomaly.<kind>` in a 64-character column. tests/fuzz/test_hostile_strings.py projects every
# string field of every type at these widths (and free text at length), on PostgreSQL.
BOUNDED_FIELDS: Mapping[str, int] = {
    "case_id": 128,
    "case_number": 128,
    "review_id": 128,
    "review_batch": 128,
    "list_entry_id": 128,
    "about_subject": 128,
    "category": 64,
    "matter_category": 64,
    "about_area": 64,
    "alert_id": 64,
    "anomaly_id": 64,
    "rule_id": 64,
    "kind": 56,
}


def control_problem(text: str) -> str | None:
    """Why `text` cannot be kept as text, or None. Most text is printable: one C call decides."""
    if text.isprintable():
        return None
    match = _CONTROL.search(text)
    if match is None:
        return None  # tab, line breaks, format characters (U+200B, U+202E): text, kept verbatim
    code = ord(match.group())
    return f"contains the control character U+{code:04X}, which no text may hold"


def attribute_problem(value: str, limit: int) -> str | None:
    """Why a context attribute (id, source, subject) cannot be stored, or None."""
    problem = control_problem(value)
    if problem is not None:
        return problem
    if len(value) > limit:
        return f"longer than {limit} characters"
    return None


def data_problem(data: Mapping[str, Any], path: str = "data") -> tuple[str, str] | None:
    """(field, reason) for the first value of `data` the store cannot keep, or None.

    Runs on every decoded event (about 1 µs for a typical one): printable text is decided by one C
    call, and only plain dicts and lists (what Avro and JSON give) are walked into."""
    for name, value in data.items():
        if isinstance(value, str):
            if not value.isprintable():
                problem = control_problem(value)
                if problem is not None:
                    return f"{path}.{name}", problem
            limit = BOUNDED_FIELDS.get(name)
            if limit is not None and len(value) > limit:
                return f"{path}.{name}", f"longer than {limit} characters"
        elif isinstance(value, dict | list) and not _nested_clean(value):
            return _nested_problem(value, f"{path}.{name}")
    return None


def _nested_clean(value: dict[Any, Any] | list[Any]) -> bool:
    """The fast pass over nested values: no paths are built unless something is found."""
    stack: list[Any] = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            if not current.isprintable() and control_problem(current) is not None:
                return False
        elif isinstance(current, dict):
            for key, child in current.items():
                if isinstance(key, str) and not key.isprintable() and control_problem(key) is not None:
                    return False
                stack.append(child)
        elif isinstance(current, list):
            stack.extend(current)
    return True


def _nested_problem(value: Any, path: str) -> tuple[str, str]:
    """Where the fast pass found something; iterative, so no nesting can overflow the stack."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        current, where = stack.pop()
        if isinstance(current, str):
            problem = control_problem(current)
            if problem is not None:
                return where, problem
        elif isinstance(current, dict):
            for key, child in current.items():
                problem = control_problem(str(key))
                if problem is not None:
                    return where, problem
                stack.append((child, f"{where}.{key}"))
        elif isinstance(current, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(current))
    return path, "contains a control character"  # not reached: the fast pass found one
