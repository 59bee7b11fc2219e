"""Masking of personal data for readers who are not entitled to it, and always in public feeds."""

from __future__ import annotations

import re

# Resident ID numbers (18 characters, the last may be X) and mainland mobile numbers, wherever they
# appear in free text that officers typed.
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[0-9Xx])(?![0-9A-Za-z])")
_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")


def mask_name(name: str | None) -> str | None:
    """张三 -> 张*, 欧阳娜娜 -> 欧***; organisations keep their name (not personal data)."""
    if not name:
        return name
    return name[0] + "*" * (len(name) - 1)


def mask_text(text: str | None) -> str | None:
    """Mask ID numbers and phone numbers inside free text."""
    if not text:
        return text
    text = _ID_NUMBER.sub(lambda m: m.group(1) + "********" + m.group(2), text)
    return _MOBILE.sub(lambda m: m.group(1) + "****" + m.group(2), text)


def mask_id_number(value: str | None) -> str | None:
    """44011319900101123X -> 440113********123X: region and the last four, never the birth date.

    The stars do not follow the length, which would tell an 18-digit number from an old 15-digit one.
    """
    if not value:
        return value
    value = value.strip()
    if len(value) <= 10:
        return "*" * 8
    return value[:6] + "*" * 8 + value[-4:]


def mask_phone(value: str | None) -> str | None:
    """13812345678 -> 138****5678; a number too short to keep seven characters of is starred."""
    if not value:
        return value
    value = value.strip()
    if len(value) < 8:
        return "*" * 4
    return value[:3] + "*" * 4 + value[-4:]


def mask_address(value: str | None) -> str | None:
    """广州市番禺区市桥街道某路1号 -> 广州市番禺区***: the first six characters (city and district, as a
    rule), never more than half of a short address."""
    if not value:
        return value
    value = value.strip()
    return value[: min(6, len(value) // 2)] + "*" * 3
